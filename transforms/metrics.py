"""Every metric the pipeline reports, by name: one namespace, one module.

They are Beam metrics, so every runner carries them: the direct runner's result, Flink's metric reporters
(Prometheus: docs/operations.md), Dataflow's Cloud Monitoring (custom counters and distributions). Counting
happens per batch, never per event, so the cost per event is negligible.

Each name is reported by one transform only: Flink keeps one metric per name and fused stage, so two transforms of a
stage counting the same name would show one of them, not their sum (records a step threw on are counted once, by
code, as ``dead_letters_processing_error``). Flink's Prometheus reporter shows a Beam distribution as 0, so the
latencies are also reported as cumulative bucket counters (``latency_buckets``).
"""

from __future__ import annotations

import apache_beam as beam

NAMESPACE = "realtime_analytics"

# --- counters -----------------------------------------------------------------------------------------------------
RECORDS_READ = "records_read"  # every record read, whatever the source
EVENTS_VALID = "events_valid"  # parsed and valid (contract v1)
DUPLICATES = "duplicates"  # dropped by the event_id dedup
TOO_LATE = "too_late"  # beyond the allowed lateness: dead letters (too_late)
DEAD_LETTERS = "dead_letters"  # every dead letter, whatever its code and stage
AGGREGATE_ROWS = "aggregate_rows"  # every aggregate row emitted, whatever its pane
DEDUP_STATE_IDS = "dedup_state_ids"  # ids held in dedup state: + ids added, - ids expired
DEAD_LETTER_PAYLOADS_WITHHELD = "dead_letter_payloads_withheld"
BIGQUERY_ROWS_REJECTED = "bigquery_rows_rejected"
DEAD_LETTER_WRITE_FAILURES = "dead_letter_write_failures"
BIGQUERY_STREAMS_CREATED = "bigquery_streams_created"
BIGQUERY_STREAMS_REPLACED = "bigquery_streams_replaced"
BIGQUERY_ROWS_APPENDED = "bigquery_rows_appended"
BIGQUERY_ROWS_ALREADY_WRITTEN = "bigquery_rows_already_written"
BIGQUERY_APPEND_RETRIES = "bigquery_append_retries"

# The Pub/Sub pull source (Prism, Flink: transforms/io/pubsub_pull.py), counted by the source itself, per subscription
# read. Acknowledgements happen between bundles; each bundle reports those since the one before.
PUBSUB_MESSAGES_PULLED = "pubsub_messages_pulled"  # delivered by Pull, redeliveries included
PUBSUB_MESSAGES_ACKNOWLEDGED = "pubsub_messages_acknowledged"  # acknowledged once the runner committed their bundle
PUBSUB_MESSAGES_RELEASED = "pubsub_messages_released"  # handed back for redelivery (nack) instead of acknowledged

# --- distributions (milliseconds) ---------------------------------------------------------------------------------
LATENCY_ARRIVAL_TO_EMIT_MS = "latency_arrival_to_emit_ms"  # source timestamp of a record -> its aggregate row emitted
LATENCY_EVENT_TO_EMIT_MS = "latency_event_to_emit_ms"  # event time of a record -> its aggregate row emitted

# Upper bounds (ms) of the latency bucket counters; the last bucket, ``_le_inf``, counts every sample.
LATENCY_BUCKETS_MS = (100, 250, 500, 1000, 2000, 3000, 5000, 10_000, 30_000, 60_000, 300_000, 3_600_000)

# --- gauges -------------------------------------------------------------------------------------------------------
FRESHNESS_LAG_MS = "freshness_lag_ms"  # processing time - end of the newest window emitted
# Pulled by the Pub/Sub pull source and not yet acknowledged or released, in the worker process of the bundle that
# reported last (not the subscription's backlog: that is Cloud Monitoring's num_undelivered_messages).
PUBSUB_MESSAGES_OUTSTANDING = "pubsub_messages_outstanding"


def records_read_from(scheme: str) -> str:
    """Records read per source kind: ``records_read_kafka``, ``..._pubsub``, ``..._file``, ``..._synthetic``."""
    return f"{RECORDS_READ}_{scheme or 'file'}"


def dead_letters_with_code(code: str) -> str:
    return f"{DEAD_LETTERS}_{code}"


def dead_letters_at_stage(stage: str) -> str:
    """``dead_letter_stage_parse``, ... (not ``dead_letters_...``: that prefix names the error codes)."""
    return f"dead_letter_stage_{stage}"


def aggregate_rows_with_timing(timing: str) -> str:
    """``aggregate_rows_early``, ``aggregate_rows_on_time``, ``aggregate_rows_late``."""
    return f"{AGGREGATE_ROWS}_{timing.lower()}"


def latency_bucket(name: str, bound_ms: int | None) -> str:
    """``latency_arrival_to_emit_ms_le_1000``: samples of ``name`` at most ``bound_ms``; None: ``..._le_inf``."""
    return f"{name}_le_{'inf' if bound_ms is None else bound_ms}"


class LatencyBuckets:
    """Cumulative bucket counters of one latency (``latency_bucket``): a sample counts in every bucket it fits."""

    def __init__(self, name: str) -> None:
        self._bounds = LATENCY_BUCKETS_MS
        self._counters = [counter(latency_bucket(name, bound)) for bound in (*self._bounds, None)]

    def update(self, value_ms: int) -> None:
        # Every bucket is reported, 0 if no sample fitted yet: Prometheus' rate() ignores a series' first value, so a
        # bucket whose series appeared later than the others would lose its first samples and skew the quantiles.
        for bound, bucket in zip(self._bounds, self._counters, strict=False):
            bucket.inc(1 if value_ms <= bound else 0)
        self._counters[-1].inc()


def counter(name: str) -> beam.metrics.metricbase.Counter:
    return beam.metrics.Metrics.counter(NAMESPACE, name)


def distribution(name: str) -> beam.metrics.metricbase.Distribution:
    return beam.metrics.Metrics.distribution(NAMESPACE, name)


def gauge(name: str) -> beam.metrics.metricbase.Gauge:
    return beam.metrics.Metrics.gauge(NAMESPACE, name)
