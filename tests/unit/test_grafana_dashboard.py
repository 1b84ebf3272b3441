"""The Grafana dashboard (monitoring/grafana/dashboards/realtime-analytics.json) and its provisioning files, offline:
a well-formed dashboard, PromQL Prometheus' own parser accepts, only variables it defines, recording rules that exist.
tests/integration/test_flink_prometheus.py runs every query against a live Prometheus scraping a Flink job."""

from __future__ import annotations

import re
import subprocess

import yaml

from services.prometheus import promtool
from tests.monitoring import (
    DASHBOARD,
    GRAFANA_BUILTINS,
    ROOT,
    dashboard,
    dashboard_queries,
    recording_rules,
    variables_used,
)

PROVISIONING = ROOT / "monitoring" / "grafana" / "provisioning"
PANEL_TYPES = {"row", "stat", "timeseries", "bargauge"}


def _panels() -> list[dict]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def test_dashboard_is_well_formed():
    board = dashboard()
    assert board["uid"] == "realtime-analytics"
    assert isinstance(board["schemaVersion"], int)
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    titles = [panel["title"] for panel in _panels()]
    assert len(titles) == len(set(titles)), "panel titles name the panels in the tests: keep them unique"
    for panel in board["panels"]:
        assert panel["type"] in PANEL_TYPES
    for panel in _panels():
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert ref_ids and len(ref_ids) == len(set(ref_ids)), panel["title"]
        assert all(target["expr"].strip() for target in panel["targets"]), panel["title"]


def test_panels_fit_the_grid_without_overlapping():
    taken: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        cells = {(pos["x"] + dx, pos["y"] + dy) for dx in range(pos["w"]) for dy in range(pos["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_queries_use_only_defined_variables():
    defined = {variable["name"] for variable in dashboard()["templating"]["list"]} | set(GRAFANA_BUILTINS)
    for query in dashboard_queries():
        assert variables_used(query.expr) <= defined, query


def test_job_variable_selects_by_flink_job_name():
    (job,) = [v for v in dashboard()["templating"]["list"] if v["name"] == "job_name"]
    assert job["query"]["query"].startswith("label_values(") and job["query"]["query"].endswith(", job_name)")
    for query in dashboard_queries():
        if not query.expr.startswith("max by (tm_id)"):  # TaskManager-wide, not per job
            assert 'job_name=~"$job_name"' in query.expr, query


def test_every_recording_rule_a_query_uses_exists():
    known = set(recording_rules())
    for query in dashboard_queries():
        for name in re.findall(r"\b((?:job_name|realtime_analytics):[a-zA-Z0-9_:]+)", query.expr):
            assert name in known, (query.panel, name)


def test_promql_of_every_panel_parses(tmp_path):
    values = {"job_name": "j", "__rate_interval": "1m", "datasource": "prometheus"}
    rules = [{"record": f"panel:check_{i}", "expr": query.expr} for i, query in enumerate(dashboard_queries(values))]
    rule_file = tmp_path / "panels.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    result = subprocess.run(
        [promtool(), "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_provisioning_files_point_at_the_prometheus_and_the_dashboards():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:19090"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "realtime-analytics.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    assert DASHBOARD.parent.name == "dashboards"
