"""Kafka -> the main job on the Flink session cluster -> Flink's Prometheus reporter -> a real Prometheus: every
Grafana dashboard panel and every rule of monitoring/prometheus/alerts.yml is evaluated over Prometheus' HTTP API and
checked against what was produced.

The load comes in rounds (a counter's first value gives rate() nothing; later rounds give it increases), each round
the same known mix with fresh event ids: valid events, one duplicate, one malformed, one ill-typed and one
ill-encoded record, one event beyond the allowed lateness. 4 of 9 records are dead letters, far above
DeadLetterRatioCritical's 20 %: that alert must fire, and no other alert may fire for the job. Then the job's Python
workers are killed: Flink restarts the job and FlinkJobRestarted must fire.
"""

from __future__ import annotations

import math
import re
import uuid
from collections import Counter

import psutil
import pytest

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.local_run.boot import PYTHON_MAIN
from pipelines.spec import resolve
from services.kafka import create_topics
from tests.integration.event_mix import MINUTE_US, as_json, event_fields, produce, recent_window
from tests.integration.results import wait_for
from tests.monitoring import alert_rules, dashboard_queries, recording_rules
from transforms.metrics import LATENCY_BUCKETS_MS

pytestmark = pytest.mark.integration

ROUNDS = 3
P = "flink_taskmanager_job_task_operator_realtime_analytics_"
LATENCIES = ("latency_arrival_to_emit_ms", "latency_event_to_emit_ms")
MUST_FIRE = "DeadLetterRatioCritical"
# Pending (above 1 %, waiting out its 10 minutes) as well: the same load, a lower threshold.
MAY_BE_PENDING = {"DeadLetterRatioHigh"}
# Panel targets (title, refId) that stay empty under this load, and why.
EMPTY_UNDER_THIS_LOAD = {
    ("Processing errors /s", "A"): "no step throws on this load; Beam registers a counter at its first increment",
}


def _round(r: int, window_a: int) -> tuple[list[bytes], Counter]:
    """One round of the mix (event ids unique to the round) and what each counter must gain from it."""
    window_b = window_a + MINUTE_US
    valid = [
        as_json(event_fields(f"r{r}-a1", window_a + 1_000_000, "u1", 1)),
        as_json(event_fields(f"r{r}-a2", window_a + 2_000_000, "u2", 2)),
        as_json(event_fields(f"r{r}-b1", window_b + 1_000_000, "u3", 8)),
        as_json(event_fields(f"r{r}-b2", window_b + 5_000_000, "u3", 16, event_type="purchase")),
    ]
    too_late = as_json(event_fields(f"r{r}-late", window_a - 30 * MINUTE_US, "u9", 99))
    bad = [
        b'{"event_id": "m1", ',  # malformed_json
        b'{"event_id":"t1","event_type":"click","user_id":7,"event_time":"2024-01-01T00:00:00Z"}',  # invalid_type
        b"\xff\xfe",  # invalid_encoding
    ]
    payloads = [*valid, valid[0], *bad, too_late]
    gains = Counter(
        records_read=len(payloads),
        events_valid=len(valid) + 2,  # the duplicate and the too-late event are valid events
        duplicates=1,
        too_late=1,
        dead_letters=len(bad) + 1,
        dead_letters_malformed_json=1,
        dead_letters_invalid_type=1,
        dead_letters_invalid_encoding=1,
        dead_letters_too_late=1,
    )
    return payloads, gains


def _flink_label(value: str) -> str:
    # Flink's Prometheus reporter replaces every character Prometheus does not allow in names by "_" in label values.
    return re.sub(r"[^a-zA-Z0-9:_]", "_", value)


def _values(prometheus, promql: str) -> dict[tuple, float]:
    """An instant query's result: labels (sorted items, without __name__) -> value."""
    return {
        tuple(sorted((k, v) for k, v in row["metric"].items() if k != "__name__")): float(row["value"][1])
        for row in prometheus.query(promql)
    }


def _total(prometheus, name: str, job: str) -> float | None:
    rows = _values(prometheus, f'sum({P}{name}{{job_name="{job}"}})')
    return next(iter(rows.values())) if rows else None


def _python_workers_of(job_name: str) -> list[psutil.Process]:
    """The Beam Python SDK worker processes of this job only (their PIPELINE_OPTIONS name it): never another job's."""
    workers = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if PYTHON_MAIN in " ".join(process.info["cmdline"] or ()) and job_name in process.environ().get(
                "PIPELINE_OPTIONS", ""
            ):
                workers.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return workers


def _row_snapshot(prometheus, job: str) -> dict[str, dict[str, float]]:
    """The recorded pane timings and latency buckets of the job, all from one rule evaluation: rule -> timing or le ->
    value (summed over operators and subtasks)."""
    names = "|".join(["aggregate_rows_by_timing", *(f"{latency}_bucket" for latency in LATENCIES)])
    snapshot: dict[str, dict[str, float]] = {name: {} for name in names.split("|")}
    for row in prometheus.query(f'{{__name__=~"realtime_analytics:({names})", job_name="{job}"}}'):
        name = row["metric"]["__name__"].split(":", 1)[1]
        key = row["metric"].get("timing") or row["metric"]["le"]
        snapshot[name][key] = snapshot[name].get(key, 0.0) + float(row["value"][1])
    return snapshot


def _all_tasks_running(cluster, job_name: str) -> bool:
    for summary in cluster.jobs():
        if summary.get("status") == "RUNNING":
            job = cluster.job(summary["id"])
            if job.get("name") == job_name:
                return all(vertex.get("status") == "RUNNING" for vertex in job.get("vertices", ()))
    return False


def test_dashboard_and_alerts_against_a_live_flink_job(kafka_broker, flink_cluster, prometheus, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topics(bootstrap, "metrics")["metrics"]
    job_name = f"metrics-{uuid.uuid4().hex[:8]}"
    job = _flink_label(job_name)
    spec = resolve(
        [
            f"--source=kafka://{bootstrap}/{topic}",
            f"--sink={tmp_path / 'agg'}",
            f"--dead_letter_sink={tmp_path / 'dlq'}",
            f"--kafka_consumer_group={job_name}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--runner=FlinkRunner",
            f"--flink_master={flink_cluster.flink_master}",
            "--streaming",
            f"--job_name={job_name}",
            "--checkpointing_interval=2000",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    try:
        # Every task deployed and its Python worker connected before the first record: the latencies then measure the
        # pipeline, not the job's start-up (records produced earlier would wait for it in the topic).
        wait_for(lambda: _all_tasks_running(flink_cluster, job_name), timeout_s=180, what=f"{job_name} running")
        # Windows 3 and 2 minutes before the current one: closed, so the load is late data within the allowed
        # lateness, and the newest ends 1-2 minutes ago, so FreshnessLagHigh (300 s for 5 minutes) stays far off
        # while the test waits for the alerts.
        window_a = recent_window() + MINUTE_US
        expected: Counter = Counter()
        for r in range(ROUNDS):
            payloads, gains = _round(r, window_a)
            produce(bootstrap, topic, payloads)
            expected += gains
            # Seen by Prometheus before the next round: the next round is an increase rate() can see.
            wait_for(
                lambda n=expected["records_read"]: _total(prometheus, "records_read", job) == n,
                timeout_s=60,
                what=f"Prometheus to see {expected['records_read']} records read by {job}",
            )

        # ---- counters: exactly what was produced ---------------------------------------------------------------------
        def totals() -> dict[str, float | None]:
            return {name: _total(prometheus, name, job) for name in expected}

        wait_for(lambda: totals() == dict(expected), timeout_s=60, what=f"counters {dict(expected)}")
        # Recording rules see a scrape one rule evaluation later.
        by_code = f'sum by (error_code) (realtime_analytics:dead_letters_by_code{{job_name="{job}"}})'
        codes = ("malformed_json", "invalid_type", "invalid_encoding", "too_late")
        expected_by_code = {((("error_code", code),)): float(expected[f"dead_letters_{code}"]) for code in codes}
        wait_for(lambda: _values(prometheus, by_code) == expected_by_code, timeout_s=30, what="recorded dead letters")

        # Each aggregate row is counted once by pane timing and is one sample of each latency. Rows follow the records
        # by a pane firing, so wait until a rule evaluation (one scrape: a consistent view) shows them all.
        snapshots = []

        def rows_counted_everywhere() -> bool:
            snapshot = _row_snapshot(prometheus, job)
            snapshots.append(snapshot)
            rows = _total(prometheus, "aggregate_rows", job)
            counted_by_timing = sum(snapshot["aggregate_rows_by_timing"].values())
            return (
                bool(rows)
                and counted_by_timing == rows
                and all(snapshot[f"{latency}_bucket"].get("inf") == rows for latency in LATENCIES)
            )

        wait_for(rows_counted_everywhere, timeout_s=60, what="every aggregate row counted by pane timing and latency")
        snapshot = snapshots[-1]
        assert set(snapshot["aggregate_rows_by_timing"]) <= {"early", "on_time", "late"}
        for latency in LATENCIES:
            counts = {float(le): v for le, v in snapshot[f"{latency}_bucket"].items()}
            # Every bucket has a series from the first row on (0 if no sample fitted), so rate() misses none.
            assert sorted(counts) == [*map(float, LATENCY_BUCKETS_MS), math.inf], (latency, counts)
            cumulative = [counts[bound] for bound in sorted(counts)]
            assert cumulative == sorted(cumulative), (latency, counts)

        # ---- every dashboard panel --------------------------------------------------------------------------------
        variables = {"job_name": re.escape(job), "__rate_interval": "2m", "datasource": "prometheus"}
        panels: dict[str, dict[str, dict[tuple, float]]] = {}
        for query in dashboard_queries(variables):
            assert "$" not in query.expr, query
            panels.setdefault(query.panel, {})[query.ref_id] = _values(prometheus, query.expr)
        for title, targets in panels.items():
            for ref_id, rows in targets.items():
                if (title, ref_id) in EMPTY_UNDER_THIS_LOAD:
                    assert not rows, f"{title!r} {ref_id} has data now: drop it from EMPTY_UNDER_THIS_LOAD, check it"
                else:
                    assert rows, f"panel {title!r} query {ref_id} shows nothing"

        def single(title: str, ref_id: str = "A") -> float:
            (value,) = panels[title][ref_id].values()
            return value

        assert single("Records read (job total)") == expected["records_read"]
        assert single("Dead letters (job total)") == expected["dead_letters"]
        assert panels["Dead letters by code (job total)"]["A"] == expected_by_code
        assert 0.2 < single("Dead-letter ratio (5 min)") < 0.7  # 4 of 9 per round; rate() extrapolates per series
        assert single("Restarts (15 min)") == 0
        assert single("Records read /s by source", "B") > 0
        (source,) = panels["Records read /s by source"]["A"]
        assert dict(source) == {"source": "kafka"}
        by_source = f'sum by (source) (realtime_analytics:records_read_by_source{{job_name="{job}"}})'
        assert _values(prometheus, by_source) == {(("source", "kafka"),): expected["records_read"]}
        assert all(single("Events /s: valid, duplicate, too late", ref_id) > 0 for ref_id in "ABC")
        assert single("Aggregate rows /s by pane", "B") > 0
        assert {dict(k)["error_code"] for k in panels["Dead letters /s by code"]["A"]} == set(codes)
        assert 0 <= single("Kafka source lag (s)") < 300
        # KafkaIO's backlog gauges (Beam Java 2.62 reports them as it reads): the job has read every record sent.
        assert 0 <= single("Kafka records behind") < expected["records_read"]
        # The newest window emitted ended 1-2 minutes before the load was sent.
        assert 60 < single("Freshness lag") < 300
        # Ids of the valid events (4 a round) and of the too-late one, which expires once the watermark passes its
        # event time + the dedup horizon; the duplicate adds none.
        assert 4 * ROUNDS <= single("Dedup state (event ids held)") <= 5 * ROUNDS
        by_stage = f'sum by (stage) (realtime_analytics:dead_letters_by_stage{{job_name="{job}"}})'
        assert {dict(k)["stage"]: v for k, v in _values(prometheus, by_stage).items()} == {
            "parse": 2 * ROUNDS,  # malformed_json, invalid_encoding
            "validate": ROUNDS,  # invalid_type
            "window": ROUNDS,  # too_late
        }
        # Arrival (the Kafka record's timestamp) -> row emitted: seconds, far under the SLO of 30 s. Event time ->
        # emitted: the load's event times are 2-4 minutes old, so minutes (between the 60 s and 3600 s bounds).
        p50_arrival, p99_arrival = single("Latency arrival → emit", "A"), single("Latency arrival → emit", "B")
        assert 0 < p50_arrival <= p99_arrival <= 30_000
        assert single("p99 arrival → emit (5 min)") <= 30_000
        p50_event, p99_event = single("Latency event time → emit", "A"), single("Latency event time → emit", "B")
        assert 60_000 < p50_event <= p99_event <= 3_600_000
        assert single("Kafka records and bytes read /s") > 0
        assert single("Restarts and checkpoints") == 0  # numRestarts
        watermark_lags = {dict(k)["operator_name"]: v for k, v in panels["Freshness lag and watermarks"]["B"].items()}
        assert any(name.startswith("Source:") and 0 <= lag < 300 for name, lag in watermark_lags.items())
        assert all(math.isfinite(lag) for lag in watermark_lags.values())

        # ---- every rule: valid PromQL against the live metrics; only the dead-letter alerts hold for this job -------
        for rule in recording_rules().values():
            prometheus.query(rule["expr"])  # raises on an error answer
        holding = {
            name
            for name, rule in alert_rules().items()
            if any(dict(labels).get("job_name") == job for labels in _values(prometheus, rule["expr"]))
        }
        assert holding == {MUST_FIRE, *MAY_BE_PENDING}
        ratio = _values(prometheus, f'job_name:realtime_analytics_dead_letter_ratio:rate5m{{job_name="{job}"}}')
        assert all(0.2 < v < 0.7 and not math.isnan(v) for v in ratio.values())

        # ---- the alert that must fire fires (DeadLetterRatioCritical holds for 1 minute first) --------------------
        def states() -> dict[str, str]:
            return {
                alert["labels"]["alertname"]: alert["state"]
                for alert in prometheus.alerts()
                if alert["labels"].get("job_name") == job
            }

        wait_for(lambda: states().get(MUST_FIRE) == "firing", timeout_s=150, what=f"{MUST_FIRE} firing for {job}")
        assert set(states()) <= {MUST_FIRE, *MAY_BE_PENDING}
        assert all(state == "pending" for name, state in states().items() if name in MAY_BE_PENDING)

        # ---- a restart fires FlinkJobRestarted: kill this job's Python workers, send a round so a bundle finds out --
        workers = _python_workers_of(job_name)
        assert workers, f"no Python SDK worker of {job_name} found"
        for worker in workers:
            worker.kill()
        payloads, _ = _round(ROUNDS, window_a)
        produce(bootstrap, topic, payloads)
        wait_for(
            lambda: states().get("FlinkJobRestarted") == "firing", timeout_s=120, what=f"FlinkJobRestarted for {job}"
        )
        restarts = _values(prometheus, f'job_name:flink_job_restarts:15m{{job_name="{job}"}}')
        assert list(restarts.values()) and all(v >= 1 for v in restarts.values())
    finally:
        result.cancel()
