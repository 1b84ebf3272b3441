"""Generated from the option table (``pipelines/options.py``): ``templates/metadata.json`` and the README's options
table.

Names, help texts, defaults, regexes and labels all come from the table, so the template and the README cannot
drift from the CLI. A test checks that both committed files equal the generated ones and that every regex agrees
with the real validation.

    python -m pipelines.release.template_metadata            # print the metadata
    python -m pipelines.release.template_metadata --write    # rewrite templates/metadata.json and README.md's table
    python -m pipelines.release.template_metadata --check    # templates/ and the README are consistent: generated
                                                     # files current and valid, Dockerfile base images pinned
                                                     # (`make template`; no Docker needed)
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipelines.options import ALL_OPTIONS, OPTIONS, Option

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
METADATA = TEMPLATES / "metadata.json"
DOCKERFILE = TEMPLATES / "Dockerfile"
README = ROOT / "README.md"
README_START = "<!-- generated from pipelines/options.py by python -m pipelines.release.template_metadata --write -->"
README_END = "<!-- end of the generated options table -->"

TEMPLATE_NAME = "realtime-analytics"
DESCRIPTION = (
    "Raw events (Pub/Sub, files on GCS, or a synthetic generator) -> validated, deduplicated, windowed aggregates "
    "with HLL++ distinct users; every bad record goes to the dead letter with an error code."
)

# Constructs outside the POSIX ERE / Java / Python common subset.
_NON_PORTABLE = re.compile(r"\\[dDwWsSbB]|\(\?|\[\[:|\\[pP]\{")


def template_options() -> list[Option]:
    """The options that are template parameters, in table order (not Flink's: no use in a Dataflow template)."""
    return [option for option in OPTIONS if option.template is not None]


def _help_text(option: Option) -> str:
    param = option.template
    assert param is not None
    text = " ".join(option.help.split())
    if param.required:
        text = re.sub(r"\s*Default:[^.]*\.", "", text)  # the CLI's default does not apply to the template
    if option.default is not None and "Default" not in text and not param.required:
        text += f" Default: {option.default}."
    if param.note:
        text += f" {param.note}"
    return text


def build_metadata() -> dict[str, Any]:
    parameters = []
    for option in template_options():
        param = option.template
        assert param is not None
        entry: dict[str, Any] = {
            "name": option.name,
            "label": param.label or option.name.replace("_", " ").capitalize(),
            "helpText": _help_text(option),
            "isOptional": not param.required,
            "regexes": [param.regex],
            "paramType": param.param_type,
        }
        if param.enum:
            entry["enumOptions"] = [{"value": value} for value in param.enum]
        if option.default is not None and not param.required:
            entry["defaultValue"] = str(option.default)
        parameters.append(entry)
    return {"name": TEMPLATE_NAME, "description": DESCRIPTION, "parameters": parameters}


def render(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"


def readme_table() -> str:
    """The README's options table: every option of the table, in its order."""
    rows = ["| option | default | meaning |", "|---|---|---|"]
    for option in ALL_OPTIONS:
        default = option.readme_default or (f"`{option.default}`" if option.default is not None else "none")
        rows.append(f"| `{option.flag}` | {default} | {option.readme} |")
    return "\n".join(rows) + "\n"


def readme_with_table(readme: str) -> str:
    """``readme`` with the text between the markers replaced by the generated table."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[:start] + "\n" + readme_table() + readme[end:]


def metadata_problems(text: str) -> list[str]:
    """Schema sanity of a metadata.json text: Dataflow's own TemplateMetadata message parses it, names are unique
    and valid, regexes are portable and compile."""
    from google.cloud.dataflow_v1beta3.types import TemplateMetadata

    problems = []
    try:
        TemplateMetadata.from_json(text)  # rejects unknown fields and wrong types, as the service does
    except Exception as exc:  # noqa: BLE001 - protobuf's json_format raises several types
        problems.append(f"not a valid TemplateMetadata: {exc}")
        return problems
    data = json.loads(text)
    names = [p.get("name", "") for p in data.get("parameters", [])]
    if len(names) != len(set(names)):
        problems.append(f"duplicate parameter names: {names}")
    for param in data.get("parameters", []):
        name = param.get("name", "")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            problems.append(f"parameter name {name!r} is not a pipeline option name")
        for key in ("label", "helpText"):
            if not param.get(key):
                problems.append(f"{name}: {key} is required")
        for regex in param.get("regexes", []):
            if not (regex.startswith("^") and regex.endswith("$")):
                problems.append(f"{name}: regex {regex!r} is not anchored with ^...$")
            if _NON_PORTABLE.search(regex):
                problems.append(f"{name}: regex {regex!r} uses a construct POSIX ERE lacks")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", FutureWarning)  # e.g. "possible nested set": not portable
                    re.compile(regex)
            except (re.error, FutureWarning) as exc:
                problems.append(f"{name}: regex {regex!r} does not compile cleanly: {exc}")
    return problems


_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)", re.IGNORECASE | re.MULTILINE)
_COPY_FROM = re.compile(r"^\s*COPY\s+.*--from=(?P<image>\S+)", re.IGNORECASE | re.MULTILINE)
_ARG = re.compile(r"^\s*ARG\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<value>\S*))?", re.IGNORECASE | re.MULTILINE)
_STAGE = re.compile(r"^\s*FROM\s+.*\s+AS\s+(?P<name>\S+)\s*$", re.IGNORECASE | re.MULTILINE)


def dockerfile_problems(text: str) -> list[str]:
    """Lint-level checks: every base image pinned by a tag (not ``latest``) or a digest, the two roles present."""
    problems = []
    args = {m["name"]: m["value"] for m in _ARG.finditer(text) if m["value"]}
    stages = {m["name"].lower() for m in _STAGE.finditer(text)}
    images = [m["image"] for m in _FROM.finditer(text)] + [m["image"] for m in _COPY_FROM.finditer(text)]
    for raw in images:
        image = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), raw)
        if image.lower() in stages:
            continue
        if "$" in image:
            problems.append(f"image {raw!r}: a build argument without a pinned default")
            continue
        name, _, digest = image.partition("@")
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        if digest:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                problems.append(f"image {image!r}: malformed digest")
        elif not tag:
            problems.append(f"image {image!r} is not pinned (no tag or digest)")
        elif tag == "latest":
            problems.append(f"image {image!r} uses the moving tag 'latest'")
    for needle, why in (
        ("apache/beam_python3.11_sdk:2.77.0", "the worker base must be the Beam SDK image of the pinned Beam"),
        ("python311-template-launcher-base", "the flex template launcher binary must be copied in"),
        ("/opt/google/dataflow/python_template_launcher", "the launcher binary's path"),
        ("FLEX_TEMPLATE_PYTHON_PY_FILE", "the launcher needs the pipeline's entry file"),
        ("FLEX_TEMPLATE_PYTHON_SETUP_FILE", "the launcher needs the package's setup.py"),
        ("--require-hashes", "dependencies must be installed from hashed pins"),
        ('ENTRYPOINT ["/opt/apache/beam/boot"]', "the worker container must start Beam's boot"),
    ):
        if needle not in text:
            problems.append(f"missing {needle!r}: {why}")
    for path in re.findall(r'^ENV\s+FLEX_TEMPLATE_PYTHON_\w+="?\$\{WORKDIR\}/(\S+?)"?$', text, flags=re.MULTILINE):
        if not (ROOT / path).exists():
            problems.append(f"FLEX_TEMPLATE_PYTHON_* points to {path}, which is not in the repository")
    return problems


def _stale(name: str, committed: str, expected: str) -> str:
    diff = "".join(difflib.unified_diff(committed.splitlines(True), expected.splitlines(True), name, "generated"))
    return f"{name} is stale: python -m pipelines.release.template_metadata --write\n{diff}"


def template_problems() -> list[str]:
    problems = []
    expected = render(build_metadata())
    committed = METADATA.read_text() if METADATA.exists() else ""
    if committed != expected:
        problems.append(_stale("templates/metadata.json", committed, expected))
    readme = README.read_text()
    if readme_with_table(readme) != readme:
        problems.append(_stale("README.md", readme, readme_with_table(readme)))
    problems += [f"metadata.json: {p}" for p in metadata_problems(expected)]
    problems += [f"Dockerfile: {p}" for p in dockerfile_problems(DOCKERFILE.read_text())]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.release.template_metadata", description=__doc__.split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite templates/metadata.json and the README table")
    mode.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale or invalid")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.write:
        METADATA.write_text(render(build_metadata()))
        README.write_text(readme_with_table(README.read_text()))
        print(f"wrote {METADATA.relative_to(ROOT)} and the options table of {README.relative_to(ROOT)}")
        return 0
    if args.check:
        problems = template_problems()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print("templates/: metadata.json current and valid, README options table current, Dockerfile pinned")
        return 0
    print(render(build_metadata()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
