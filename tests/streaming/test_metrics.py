"""The pipeline's metrics (transforms/metrics.py) on a stream whose every record is known: counters per source kind,
per dead-letter code and stage, per pane timing; dedup state size; latency distributions and the freshness gauge.

Times are seconds after T0 = 2024-01-01T00:00:00Z.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.runners import direct_runner
from tests.streaming.timeline import at, record, stream
from transforms import metrics
from transforms.analytics import AnalyticsConfig, StreamingAnalytics
from transforms.records import SourceRecord
from transforms.timefmt import now_us
from transforms.windowing import FIXED, WindowSpec


def test_every_metric_counts_what_the_stream_held():
    spec = WindowSpec(FIXED, size_s=60, allowed_lateness_s=120, early_firing_s=10)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 10), record("b", 20), record("a", 10)])  # on time; a redelivery of a
        .add_elements([SourceRecord(b"{", "test"), record("c", 30, event_type="Bad")])  # malformed; invalid
        .advance_processing_time(11)  # early pane
        .advance_watermark_to(at(61))  # on-time pane
        .add_elements([record("d", 40)])  # late, within the allowed lateness: late pane
        .advance_watermark_to(at(300))  # [0, 60) expired at 180
        .add_elements([record("e", 50)])  # too late
        .advance_watermark_to_infinity()
    )
    started_us = now_us()
    options = PipelineOptions(streaming=True)
    p = beam.Pipeline(runner=direct_runner(streaming=True), options=options)
    _ = p | timeline | StreamingAnalytics(AnalyticsConfig(window=spec, streaming=True, source_kind="kafka"))
    result = p.run()
    result.wait_until_finish()
    found = result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    counters = {c.key.metric.name: c.committed for c in found["counters"]}
    assert {name: counters.get(name, 0) for name in (
        metrics.RECORDS_READ, metrics.records_read_from("kafka"), metrics.EVENTS_VALID, metrics.DUPLICATES,
        metrics.TOO_LATE, metrics.DEAD_LETTERS, metrics.dead_letters_with_code("malformed_json"),
        metrics.dead_letters_with_code("invalid_value"), metrics.dead_letters_with_code("too_late"),
        metrics.dead_letters_at_stage("parse"), metrics.dead_letters_at_stage("validate"),
        metrics.dead_letters_at_stage("window"), metrics.aggregate_rows_with_timing("EARLY"),
        metrics.aggregate_rows_with_timing("ON_TIME"), metrics.aggregate_rows_with_timing("LATE"),
        metrics.AGGREGATE_ROWS, metrics.DEDUP_STATE_IDS,
    )} == {
        "records_read": 7, "records_read_kafka": 7, "events_valid": 5, "duplicates": 1, "too_late": 1,
        "dead_letters": 3, "dead_letters_malformed_json": 1, "dead_letters_invalid_value": 1,
        "dead_letters_too_late": 1, "dead_letter_stage_parse": 1, "dead_letter_stage_validate": 1,
        "dead_letter_stage_window": 1, "aggregate_rows_early": 1, "aggregate_rows_on_time": 1,
        "aggregate_rows_late": 1, "aggregate_rows": 3,
        "dedup_state_ids": 0,  # added when kept, expired when the stream ended: state holds no id any more
    }  # fmt: skip
    distributions = {d.key.metric.name: d.committed for d in found["distributions"]}
    for name in (metrics.LATENCY_ARRIVAL_TO_EMIT_MS, metrics.LATENCY_EVENT_TO_EMIT_MS):
        assert distributions[name].count == 3  # one sample per row
        # The stream's times are in 2024: emitted "now", so at least that long ago.
        assert distributions[name].min >= (started_us - at(120).micros) // 1000
    # The same samples as cumulative bucket counters (Flink's Prometheus reporter shows distributions as 0).
    bucket = metrics.latency_bucket
    for name in (metrics.LATENCY_ARRIVAL_TO_EMIT_MS, metrics.LATENCY_EVENT_TO_EMIT_MS):
        assert counters[bucket(name, None)] == 3
        assert counters.get(bucket(name, metrics.LATENCY_BUCKETS_MS[-1]), 0) == 0  # the stream is from 2024
    gauges = {g.key.metric.name: g.committed for g in found["gauges"]}
    assert gauges[metrics.FRESHNESS_LAG_MS].value >= (started_us - at(60).micros) // 1000
