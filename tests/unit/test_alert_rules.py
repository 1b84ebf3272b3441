"""The Prometheus rules (monitoring/prometheus/alerts.yml) are valid and unit-tested with `promtool test rules`
(monitoring/prometheus/tests/), and each alert's threshold is the number its expression compares against, the one
docs/operations.md documents and the one its Dataflow alert policy uses (templates/monitoring/)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from services.prometheus import promtool
from tests.monitoring import ROOT, RULES, alert_rules

PROMTOOL_TESTS = sorted((ROOT / "monitoring" / "prometheus" / "tests").glob("*_test.yml"))
OPERATIONS = ROOT / "docs" / "operations.md"


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, each space a hyphen."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_promtool_accepts_the_rule_file():
    result = _run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    assert PROMTOOL_TESTS, "no promtool test files"
    result = _run("test", "rules", *map(str, PROMTOOL_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_seen_firing_in_a_promtool_test():
    fired = set()
    for path in PROMTOOL_TESTS:
        for group in yaml.safe_load(path.read_text())["tests"]:
            for case in group.get("alert_rule_test", []):
                if case.get("exp_alerts"):
                    fired.add(case["alertname"])
    assert fired == set(alert_rules())


@pytest.mark.parametrize("name", sorted(alert_rules()))
def test_the_threshold_annotation_is_the_number_the_expression_compares_against(name):
    rule = alert_rules()[name]
    threshold = rule["annotations"]["threshold"]
    assert re.search(rf">=?\s*{re.escape(threshold)}(?![\d.])", rule["expr"]), (threshold, rule["expr"])
    assert rule["labels"]["severity"] in ("warning", "critical")


@pytest.mark.parametrize("name", sorted(alert_rules()))
def test_every_alert_has_its_runbook_section_and_table_row(name):
    docs = OPERATIONS.read_text()
    anchors = {github_anchor(m.group(1)) for m in re.finditer(r"^#{2,4} (.+)$", docs, flags=re.MULTILINE)}
    rule = alert_rules()[name]
    path, anchor = rule["annotations"]["runbook"].split("#")
    assert path == "docs/operations.md"
    assert anchor in anchors
    # The thresholds table: | `Alert` | threshold | for | severity | ...
    row = re.search(rf"^\| `{name}` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|", docs, flags=re.MULTILINE)
    assert row, f"{name} is not in the thresholds table of docs/operations.md"
    documented, for_, severity = (cell.strip() for cell in row.groups())
    assert re.search(rf"(?<![\d.]){re.escape(rule['annotations']['threshold'])}(?![\d.])", documented.replace(" ", ""))
    assert for_ == rule.get("for", "—")
    assert severity == rule["labels"]["severity"]
