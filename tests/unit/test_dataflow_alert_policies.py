"""The Dataflow alert policies (templates/monitoring/alert-policies/, Cloud Monitoring AlertPolicy JSON with PromQL
conditions), checked offline: the shape Cloud Monitoring's API takes, PromQL that Prometheus' own parser accepts, the
same thresholds and durations as the Prometheus alerts, and the apply script's rendering (DRY_RUN=1, no gcloud)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from services.prometheus import promtool
from tests.monitoring import alert_rules

ROOT = Path(__file__).resolve().parents[2]
POLICIES = sorted((ROOT / "templates" / "monitoring" / "alert-policies").glob("*.json"))
APPLY = ROOT / "templates" / "monitoring" / "apply-alert-policies.sh"
# Dataflow never restarts a job (it retries work items): a failed job is the counterpart of a Flink restart, with the
# same threshold; it pages (critical) where a single Flink restart only warns.
COUNTERPART = {"DataflowJobFailed": "FlinkJobRestarted"}
# Prometheus alerts without a Dataflow policy, and why (docs/operations.md says the same).
NO_DATAFLOW_POLICY = {"FlinkJobRestartLoop": "Dataflow does not restart jobs"}
# AlertPolicy fields (monitoring.googleapis.com v3) this project sets; anything else is a typo the API would reject.
POLICY_FIELDS = {
    "displayName",
    "documentation",
    "userLabels",
    "severity",
    "combiner",
    "enabled",
    "alertStrategy",
    "conditions",
    "notificationChannels",
}
PROMQL_FIELDS = {"query", "duration", "evaluationInterval", "labels", "ruleGroup", "alertRule"}
LABEL_KEY_OR_VALUE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


def _policy(path: Path) -> dict:
    return json.loads(path.read_text())


def _condition(policy: dict) -> dict:
    (condition,) = policy["conditions"]
    return condition["conditionPrometheusQueryLanguage"]


def _alert_of(policy: dict) -> str:
    rule = _condition(policy)["alertRule"]
    return COUNTERPART.get(rule, rule)


def _seconds(duration: str) -> int:
    value, unit = re.fullmatch(r"(\d+)([smh])", duration).groups()
    return int(value) * {"s": 1, "m": 60, "h": 3600}[unit]


def test_every_prometheus_alert_has_a_dataflow_policy():
    covered = {_alert_of(_policy(path)) for path in POLICIES}
    assert covered == set(alert_rules()) - set(NO_DATAFLOW_POLICY)
    assert len(covered) == len(POLICIES)


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_policy_has_the_shape_cloud_monitoring_takes(path):
    policy = _policy(path)
    assert set(policy) <= POLICY_FIELDS
    assert policy["displayName"].startswith("realtime-analytics ${JOB_NAME}: ")
    assert policy["combiner"] == "OR"
    assert policy["severity"] in ("WARNING", "CRITICAL")
    assert policy["enabled"] is True
    assert policy["documentation"]["mimeType"] == "text/markdown"
    assert len(policy["documentation"]["content"]) <= 8192
    assert re.fullmatch(r"\d+s", policy["alertStrategy"]["autoClose"])
    for key, value in policy["userLabels"].items():
        assert LABEL_KEY_OR_VALUE.match(key) and LABEL_KEY_OR_VALUE.match(value), (key, value)
    condition = _condition(policy)
    assert set(condition) <= PROMQL_FIELDS
    assert re.fullmatch(r"\d+s", condition["duration"]) and re.fullmatch(r"\d+s", condition["evaluationInterval"])
    assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", condition["alertRule"])
    assert path.stem == re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", condition["alertRule"].replace("SLO", "Slo")).lower()


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_policy_uses_the_prometheus_alerts_threshold_duration_and_severity(path):
    policy = _policy(path)
    rule = alert_rules()[_alert_of(policy)]
    condition = _condition(policy)
    threshold = rule["annotations"]["threshold"]
    assert re.search(rf">=?\s*{re.escape(threshold)}(?![\d.])", condition["query"]), (threshold, condition["query"])
    assert _seconds(condition["duration"]) == _seconds(rule.get("for", "0s"))
    severity = "critical" if _condition(policy)["alertRule"] in COUNTERPART else rule["labels"]["severity"]
    assert policy["severity"] == severity.upper()
    assert policy["userLabels"]["severity"] == severity
    assert rule["annotations"]["runbook"].split("#")[1] in policy["documentation"]["content"]


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.stem)
def test_every_selector_is_scoped_to_the_job(path):
    query = _condition(_policy(path))["query"]
    selectors = re.findall(r"dataflow_googleapis_com:\w+\{((?:[^{}]|\$\{\w+\})*)\}", query)
    assert selectors
    for selector in selectors:
        assert 'monitored_resource="dataflow_job"' in selector and 'job_name="${JOB_NAME}"' in selector


def test_promql_of_every_policy_parses(tmp_path):
    rules = [
        {"alert": _condition(_policy(path))["alertRule"], "expr": _condition(_policy(path))["query"]}
        for path in POLICIES
    ]
    rule_file = tmp_path / "dataflow.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dataflow", "rules": rules}]}).replace("${JOB_NAME}", "j"))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_apply_script_renders_each_policy_for_the_job_without_calling_gcloud():
    env = dict(
        os.environ,
        PROJECT="my-project",
        JOB_NAME="realtime-analytics-prod",
        NOTIFICATION_CHANNELS="projects/my-project/notificationChannels/1,projects/my-project/notificationChannels/2",
        DRY_RUN="1",
        PATH=f"/nonexistent:{os.environ['PATH']}",
    )
    out = subprocess.run(["bash", str(APPLY)], env=env, capture_output=True, text=True, timeout=60, check=True).stdout
    decoder, rendered, position = json.JSONDecoder(), [], 0
    while out[position:].strip():
        policy, end = decoder.raw_decode(out, position + len(out[position:]) - len(out[position:].lstrip()))
        rendered.append(policy)
        position = end
    assert len(rendered) == len(POLICIES)
    for policy in rendered:
        assert "${JOB_NAME}" not in json.dumps(policy)
        assert policy["displayName"].startswith("realtime-analytics realtime-analytics-prod: ")
        assert policy["notificationChannels"] == env["NOTIFICATION_CHANNELS"].split(",")
        assert 'job_name="realtime-analytics-prod"' in _condition(policy)["query"]


def test_apply_script_refuses_a_job_name_dataflow_would_refuse():
    env = dict(os.environ, PROJECT="p", JOB_NAME='x"} or vector(1) #', DRY_RUN="1")
    result = subprocess.run(["bash", str(APPLY)], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "JOB_NAME" in result.stderr and not result.stdout
