"""Every Beam metric the monitoring files name is one the pipeline reports (transforms/metrics.py), spelled as the
runner exports it: the dashboard's and the Prometheus rules' Flink names, the series the promtool tests feed them,
the Dataflow alert policies' metric_name.

A metric renamed in the graph (processing_errors -> dead_letters_processing_error, dead_letters_stage_<stage> ->
dead_letter_stage_<stage>) would otherwise leave a panel or an alert silently empty: a counter that is never
reported gives no series, not an error. Name patterns (``__name__=~``, ``metric_name=~``) must select exactly one
family of names, e.g. every ``dead_letters_<code>`` and no ``dead_letter_stage_<stage>``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import apache_beam as beam
import pytest
import yaml

from tests.monitoring import dashboard_queries, rules
from transforms import dead_letter as dl
from transforms import metrics

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL_TESTS = sorted((ROOT / "monitoring" / "prometheus" / "tests").glob("*_test.yml"))
POLICIES = sorted((ROOT / "templates" / "monitoring" / "alert-policies").glob("*.json"))
FLINK_PREFIX = f"flink_taskmanager_job_task_operator_{metrics.NAMESPACE}_"
SOURCE_KINDS = ("kafka", "pubsub", "file", "synthetic")
TIMINGS = ("early", "on_time", "late")
LATENCIES = (metrics.LATENCY_ARRIVAL_TO_EMIT_MS, metrics.LATENCY_EVENT_TO_EMIT_MS)

# The names with a dimension in them, by family; a name pattern must select exactly one family.
FAMILIES: dict[str, frozenset[str]] = {
    "records_read_<kind>": frozenset(metrics.records_read_from(kind) for kind in SOURCE_KINDS),
    "dead_letters_<code>": frozenset(metrics.dead_letters_with_code(code) for code in dl.ERROR_CODES),
    "dead_letter_stage_<stage>": frozenset(metrics.dead_letters_at_stage(stage) for stage in dl.STAGES),
    "aggregate_rows_<timing>": frozenset(metrics.aggregate_rows_with_timing(timing) for timing in TIMINGS),
    **{
        f"{name}_le_<bound>": frozenset(
            metrics.latency_bucket(name, bound) for bound in (*metrics.LATENCY_BUCKETS_MS, None)
        )
        for name in LATENCIES
    },
}
PLAIN = frozenset(
    value for name, value in vars(metrics).items() if name.isupper() and isinstance(value, str) and name != "NAMESPACE"
)
REPORTED = PLAIN | frozenset().union(*FAMILIES.values())

_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')


def _prometheus_exprs() -> list[tuple[str, str]]:
    exprs = [(f"panel {q.panel!r} {q.ref_id}", q.expr) for q in dashboard_queries()]
    exprs += [(f"rule {rule.get('record') or rule.get('alert')}", rule["expr"]) for rule in rules()]
    return exprs


def _flink_names(expr: str) -> tuple[set[str], set[str]]:
    """(names used literally, name patterns of ``__name__=~``), without the Flink prefix."""
    patterns = {
        p[len(FLINK_PREFIX) :] for p in re.findall(r'__name__\s*=~\s*"([^"]+)"', expr) if p.startswith(FLINK_PREFIX)
    }
    # Quoted strings are label matchers and label_replace arguments, never metric names of the selector itself.
    unquoted = _QUOTED.sub('""', expr)
    literals = set(re.findall(rf"\b{FLINK_PREFIX}([A-Za-z0-9_]+)", unquoted))
    return literals, patterns


def _dataflow_names(query: str) -> tuple[set[str], set[str]]:
    literals = set(re.findall(r'metric_name\s*=\s*"([^"]+)"', query))
    return literals, set(re.findall(r'metric_name\s*=~\s*"([^"]+)"', query))


def _selected_family(pattern: str) -> str | None:
    selected = {name for name in REPORTED if re.fullmatch(pattern, name)}
    return next((family for family, names in FAMILIES.items() if names == selected), None)


def _uses() -> list[tuple[str, set[str], set[str]]]:
    uses = [(where, *_flink_names(expr)) for where, expr in _prometheus_exprs()]
    for path in POLICIES:
        for condition in json.loads(path.read_text())["conditions"]:
            query = condition["conditionPrometheusQueryLanguage"]["query"]
            uses.append((f"policy {path.name}", *_dataflow_names(query)))
    return uses


def test_the_monitoring_files_name_beam_metrics_at_all():
    literals = set().union(*(used for _, used, _ in _uses()))
    patterns = set().union(*(used for _, _, used in _uses()))
    assert {metrics.RECORDS_READ, metrics.DEAD_LETTERS, metrics.dead_letters_with_code(dl.PROCESSING_ERROR)} <= literals
    assert len(patterns) >= 5


@pytest.mark.parametrize(("where", "literals", "patterns"), _uses(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_metric_named_is_one_the_pipeline_reports(where, literals, patterns):
    assert literals <= REPORTED, f"{where}: {sorted(literals - REPORTED)} not in transforms/metrics.py"
    for pattern in patterns:
        assert _selected_family(pattern), f"{where}: {pattern!r} does not select exactly one family of names"


def test_the_names_of_one_family_do_not_overlap_another():
    for family, names in FAMILIES.items():
        others = frozenset().union(*(n for f, n in FAMILIES.items() if f != family)) | PLAIN
        assert not names & others, family


@pytest.mark.parametrize("path", PROMTOOL_TESTS, ids=lambda p: p.name)
def test_promtool_tests_feed_the_rules_series_the_pipeline_reports(path):
    fed = set()
    for case in yaml.safe_load(path.read_text())["tests"]:
        for series in case.get("input_series", ()):
            name = series["series"].split("{")[0].strip()
            if name.startswith(FLINK_PREFIX):
                fed.add(name[len(FLINK_PREFIX) :])
    assert fed <= REPORTED, sorted(fed - REPORTED)


def test_every_latency_bucket_is_reported_from_the_first_sample_on():
    """A bucket counter reported only from its first fitting sample on would be a Prometheus series born later than
    the others: rate() ignores a series' first value, so those samples would be lost and the quantiles skewed
    upwards (the lower buckets undercounted against the higher ones)."""
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.testing.test_pipeline import TestPipeline

    class _Sample(beam.DoFn):
        def setup(self) -> None:
            self._buckets = metrics.LatencyBuckets("t_ms")

        def process(self, value: int):
            self._buckets.update(value)

    with TestPipeline() as p:
        _ = p | beam.Create([4000]) | beam.ParDo(_Sample())
    found = {
        c.key.metric.name: c.committed
        for c in p.result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))["counters"]
    }
    assert found == {
        metrics.latency_bucket("t_ms", bound): int(bound is None or bound >= 4000)
        for bound in (*metrics.LATENCY_BUCKETS_MS, None)
    }
