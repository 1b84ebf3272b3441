"""The whole analytics graph between a source and the sinks, as one composite transform.

``StreamingAnalytics`` takes SourceRecords and returns aggregate rows and dead-letter rows. The CLI, the flex
template and the tests all apply this same transform, so they run the very same graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp

from transforms import dead_letter as dl
from transforms.aggregate import WindowedAggregates
from transforms.batched import (
    DeduplicateRows,
    MergeAggregates,
    ParseBatches,
    PreAggregateWindows,
    PseudonymizeBatches,
    TimeRows,
    ValidateBatches,
)
from transforms.dedup import DEFAULT_DEDUP_HORIZON_S, UNIQUE, DeduplicateEvents
from transforms.guard import guarded_map
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.parse import FORMAT_JSON, ParseEvents
from transforms.pseudonymize import PseudonymizeDeadLetters, PseudonymizeEvents
from transforms.records import Event
from transforms.validate import DEFAULT_MAX_CLOCK_SKEW_S, ValidateEvents
from transforms.windowing import SAFETY_MARGIN_S, FilterTooLate, WindowEvents, WindowSpec

AGGREGATES = "aggregates"
DEAD_LETTERS = "dead_letters"

# Where event time comes from: the payload's event_time, or the source's own timestamp of the record.
TIMESTAMP_PAYLOAD = "payload"
TIMESTAMP_PUBLISH_TIME = "publish_time"
TIMESTAMP_KAFKA = "kafka_timestamp"
TIMESTAMP_SOURCES = (TIMESTAMP_PAYLOAD, TIMESTAMP_PUBLISH_TIME, TIMESTAMP_KAFKA)


@dataclass(frozen=True)
class AnalyticsConfig:
    """Everything the graph needs to know, independent of how it is launched."""

    format: str = FORMAT_JSON
    max_payload_bytes: int = 1 << 20
    max_clock_skew_s: int = DEFAULT_MAX_CLOCK_SKEW_S
    key_field: str = "page"
    dedup_horizon_s: int = DEFAULT_DEDUP_HORIZON_S
    window: WindowSpec = field(default_factory=WindowSpec)
    streaming: bool = False
    # Dedup implementation: "auto" (group-by for bounded input, keyed state + timer for streaming), or forced
    # "state", "group", "beam" (Beam's DeduplicatePerKey), "off". Only benchmarks force one (docs/benchmarks.md).
    dedup_impl: str = "auto"
    timestamp_source: str = TIMESTAMP_PAYLOAD
    # A secret reference (env:NAME or a Secret Manager version) to the HMAC key; None = user_id kept as is.
    pseudonymization_key: str | None = None
    # Bounded input in batches of records (transforms/batched.py); False processes it record by record, as a
    # stream is. Only benchmarks and tests turn it off (docs/benchmarks.md).
    batched: bool = True
    # CPython GC thresholds for the workers (transforms/batched.py: GC_THRESHOLDS), set only where they were measured
    # to help (bounded input on the direct runner); None leaves the collector alone.
    gc_thresholds: tuple[int, int, int] | None = None


def _with_event_time(event: Event) -> beam.window.TimestampedValue:
    return beam.window.TimestampedValue(event, Timestamp(micros=event.event_time_us))


def _with_source_time(event: Event) -> beam.window.TimestampedValue:
    # The source's timestamp (publish time, Kafka timestamp) becomes the event time for everything downstream:
    # windows, dedup horizon and the too-late check (which can then never fire: arrival is the event time).
    return beam.window.TimestampedValue(
        event._replace(event_time_us=event.arrival_us), Timestamp(micros=event.arrival_us)
    )


def _count_dead_letter(row: dict) -> dict:
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, "dead_letters").inc()
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, f"dead_letters_{row['error_code']}").inc()
    return row


class StreamingAnalytics(beam.PTransform):
    """SourceRecords -> {"aggregates": rows, "dead_letters": rows}.

    parse -> validate -> event time -> dedup -> (streaming: too-late filter) -> window -> aggregate.
    In batch the input is bounded and the watermark only moves at the end: nothing is late, and the filter is left
    out.
    """

    def __init__(self, config: AnalyticsConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, records):
        cfg = self._config
        if not cfg.streaming and cfg.batched and cfg.dedup_impl in ("auto", "off"):
            return self._expand_batched(records)
        parsed = records | "ParseEvents" >> ParseEvents(cfg.format, cfg.max_payload_bytes)
        validated = parsed.parsed | "ValidateEvents" >> ValidateEvents(cfg.key_field, cfg.max_clock_skew_s)
        valid = validated.valid
        if cfg.pseudonymization_key:
            # Before dedup and aggregation: sketches, keys and too_late dead letters only ever see pseudonyms.
            valid = valid | "PseudonymizeUserIds" >> PseudonymizeEvents(
                cfg.pseudonymization_key, cfg.key_field, cfg.format
            )
        stamp = _with_event_time if cfg.timestamp_source == TIMESTAMP_PAYLOAD else _with_source_time
        timed = valid | "AssignEventTime" >> guarded_map(
            stamp, dl.STAGE_EVENT_TIME, Event, main="timed", label="Stamp", step="AssignEventTime"
        )
        deduplicated = timed.timed | "DeduplicateEvents" >> DeduplicateEvents(
            cfg.dedup_horizon_s, cfg.dedup_impl, bounded=not cfg.streaming
        )
        unique = deduplicated[UNIQUE]
        dead = [parsed[dl.DEAD_LETTER_TAG], validated[dl.DEAD_LETTER_TAG], timed[dl.DEAD_LETTER_TAG]]
        if dl.DEAD_LETTER_TAG in deduplicated:  # the benchmark-only implementations have none
            dead.append(deduplicated[dl.DEAD_LETTER_TAG])
        extra_lateness = 0
        if cfg.streaming:
            filtered = unique | "FilterTooLate" >> FilterTooLate(cfg.window)
            unique = filtered.on_time
            dead.append(filtered[dl.DEAD_LETTER_TAG])
            extra_lateness = SAFETY_MARGIN_S
        aggregates = (
            unique
            | "WindowEvents" >> WindowEvents(cfg.window, cfg.streaming, extra_lateness)
            | "WindowedAggregates" >> WindowedAggregates(bounded=not cfg.streaming)
        )
        return {AGGREGATES: aggregates, DEAD_LETTERS: _collect(dead, cfg)}

    def _expand_batched(self, records):
        """Bounded input, batch by batch: the same steps under the same labels (docs/design.md, batched.py)."""
        cfg = self._config
        args = (cfg.format, cfg.key_field, cfg.max_clock_skew_s, cfg.max_payload_bytes)
        parsed = records | "ParseEvents" >> ParseBatches(*args, gc_thresholds=cfg.gc_thresholds)
        validated = parsed.parsed | "ValidateEvents" >> ValidateBatches(*args)
        valid = validated.valid
        if cfg.pseudonymization_key:
            # Before dedup and aggregation, as record by record: sketches and keys only ever see pseudonyms.
            valid = valid | "PseudonymizeUserIds" >> PseudonymizeBatches(cfg.pseudonymization_key, cfg.key_field)
        source_time = cfg.timestamp_source != TIMESTAMP_PAYLOAD
        timed = valid | "AssignEventTime" >> TimeRows(source_time=source_time)
        rows = timed.rows
        dead = [parsed[dl.DEAD_LETTER_TAG], validated[dl.DEAD_LETTER_TAG], timed[dl.DEAD_LETTER_TAG]]
        if cfg.dedup_impl != "off":
            deduplicated = rows | "DeduplicateEvents" >> DeduplicateRows(cfg.dedup_horizon_s)
            rows = deduplicated.rows
            dead.append(deduplicated[dl.DEAD_LETTER_TAG])
        windowed = rows | "WindowEvents" >> PreAggregateWindows(cfg.window)
        aggregates = windowed | "WindowedAggregates" >> MergeAggregates()
        return {AGGREGATES: aggregates, DEAD_LETTERS: _collect(dead, cfg)}


def _collect(dead: list, cfg: AnalyticsConfig) -> beam.PCollection:
    dead_letters = dead | "CollectDeadLetters" >> beam.Flatten()
    if cfg.pseudonymization_key:
        # Dead letters keep the original bytes: their user_id is pseudonymized too (or the payload withheld).
        dead_letters = dead_letters | "PseudonymizeDeadLetters" >> PseudonymizeDeadLetters(
            cfg.pseudonymization_key, cfg.format
        )
    return dead_letters | "CountDeadLetters" >> beam.Map(_count_dead_letter)
