"""templates/metadata.json and the README's options table are generated from the option table (pipelines/options.py),
and the template's regexes agree with the real validation."""

from __future__ import annotations

import json
import re

import pytest

from pipelines.options import ALL_OPTIONS, EXAMPLE_SECRET_ENV, ConfigError
from pipelines.release import template_metadata as tm
from pipelines.spec import resolve

OPTIONS = {o.name: o for o in tm.template_options()}
PARAMS = {name: option.template for name, option in OPTIONS.items()}


@pytest.fixture(autouse=True)
def _example_secrets(monkeypatch):
    """The variables the documented secret references (env:NAME) name, so the real validation can resolve them."""
    for name, value in EXAMPLE_SECRET_ENV.items():
        monkeypatch.setenv(name, value)


def _accepted(name: str, value: str) -> bool:
    """Does the pipeline's own validation take ``--name=value`` (with the other options it needs)?"""
    argv = [*PARAMS[name].context_for(value), f"--{name}={value}"]
    try:
        resolve(argv)
    except ConfigError:
        return False
    return True


def _matches(name: str, value: str) -> bool:
    return re.fullmatch(PARAMS[name].regex, value) is not None


def test_committed_metadata_is_the_generated_one():
    committed = tm.METADATA.read_text()
    assert committed == tm.render(tm.build_metadata()), "stale: python -m pipelines.release.template_metadata --write"


def test_committed_readme_options_table_is_the_generated_one():
    readme = tm.README.read_text()
    assert tm.README_START in readme and tm.README_END in readme
    assert tm.readme_with_table(readme) == readme, "stale: python -m pipelines.release.template_metadata --write"
    for option in ALL_OPTIONS:  # every option, Flink's included, has its row
        assert f"| `{option.flag}` |" in readme


def test_metadata_is_a_valid_template_metadata():
    assert tm.metadata_problems(tm.METADATA.read_text()) == []


def test_every_option_is_a_parameter_with_its_help():
    metadata = json.loads(tm.METADATA.read_text())
    by_name = {p["name"]: p for p in metadata["parameters"]}
    assert list(by_name) == list(OPTIONS)
    for name, option in OPTIONS.items():
        param = by_name[name]
        assert param["label"] and param["helpText"].startswith(" ".join(option.help.split())[:40])
        assert param["regexes"] == [PARAMS[name].regex]
        assert param["isOptional"] is not PARAMS[name].required
        if option.default is not None and not PARAMS[name].required:
            assert param["defaultValue"] == str(option.default)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_regex_accepts_the_default_and_documented_values(name):
    param = PARAMS[name]
    default = OPTIONS[name].default
    values = [*param.examples, *([str(default)] if default is not None else [])]
    for value in values:
        assert _matches(name, value), f"--{name}: regex rejects {value!r}"
        assert _accepted(name, value), f"--{name}: the pipeline rejects documented value {value!r}"
    for value in param.enum:
        assert _matches(name, value) and _accepted(name, value)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_regex_rejects_bad_values_the_pipeline_rejects_too(name):
    param = PARAMS[name]
    assert param.bad, f"--{name}: give at least one bad value"
    for value in param.bad:
        assert not _matches(name, value), f"--{name}: regex accepts bad value {value!r}"
        assert not _accepted(name, value), f"--{name}: {value!r} listed as bad, but the pipeline accepts it"


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_documented_differences_from_the_validation_are_real(name):
    param = PARAMS[name]
    for value in param.stricter:
        assert not _matches(name, value) and _accepted(name, value), f"--{name}: {value!r} is not 'stricter'"
    for value in param.lenient:
        assert _matches(name, value) and not _accepted(name, value), f"--{name}: {value!r} is not 'lenient'"


def test_obvious_bad_values_from_the_issue():
    assert not _matches("window", "weekly")
    assert not _matches("window_size", "-1")


def test_regexes_are_portable_and_anchored():
    bad = {"^\\d+$": "POSIX", "^(?:a|b)$": "POSIX", "a+": "anchored", "^[[:digit:]]+$": "POSIX"}
    for regex, why in bad.items():
        text = json.dumps(
            {"name": "t", "parameters": [{"name": "x", "label": "X", "helpText": "h", "regexes": [regex]}]}
        )
        assert any(why in p for p in tm.metadata_problems(text)), regex


def test_schema_check_rejects_unknown_fields():
    text = json.dumps({"name": "t", "parameters": [{"name": "x", "label": "X", "helptext": "h"}]})
    assert any("not a valid TemplateMetadata" in p for p in tm.metadata_problems(text))


def test_dockerfile_is_pinned_and_complete():
    assert tm.dockerfile_problems(tm.DOCKERFILE.read_text()) == []


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("FROM apache/beam_python3.11_sdk:latest", "latest"),
        ("FROM apache/beam_python3.11_sdk", "not pinned"),
        ("ARG IMG\nFROM ${IMG}", "without a pinned default"),
        ("COPY --from=gcr.io/x/launcher:latest /a /b", "latest"),
        ("FROM ubuntu@sha256:abc", "malformed digest"),
    ],
)
def test_dockerfile_lint_catches_unpinned_images(line, problem):
    text = tm.DOCKERFILE.read_text() + "\n" + line + "\n"
    assert any(problem in p for p in tm.dockerfile_problems(text))
