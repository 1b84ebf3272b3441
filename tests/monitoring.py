"""The shipped monitoring files as data: the Grafana dashboard's queries and the Prometheus rules (monitoring/).

Grafana fills in ``$variables`` before it sends a query; ``dashboard_queries`` does the same, so a test can send every
panel's query to a real Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "monitoring" / "grafana" / "dashboards" / "realtime-analytics.json"
RULES = ROOT / "monitoring" / "prometheus" / "alerts.yml"
# Grafana's own variables the dashboard uses, besides its templating list.
GRAFANA_BUILTINS = ("__rate_interval",)


@dataclass(frozen=True)
class PanelQuery:
    panel: str
    ref_id: str
    expr: str


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_queries(variables: dict[str, str] | None = None) -> list[PanelQuery]:
    """Every panel target's PromQL, with ``$name`` / ``${name}`` replaced from ``variables`` when given."""
    queries = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            if variables is not None:
                expr = re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m.group(1), m.group(0)), expr)
            queries.append(PanelQuery(panel["title"], target["refId"], expr))
    return queries


def variables_used(expr: str) -> set[str]:
    return set(re.findall(r"\$\{?(\w+)\}?", expr))


def rule_groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def rules() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def alert_rules() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def recording_rules() -> dict[str, dict]:
    return {rule["record"]: rule for rule in rules() if "record" in rule}
