"""The whole analytics graph between a source and the sinks, as one composite transform.

``StreamingAnalytics`` takes SourceRecords (or RecordBatches) and returns aggregate rows and dead-letter rows. The
CLI, the flex template and the tests all apply this same transform, so they run the very same graph, on bounded and
unbounded input, on every runner. Every step works on batches of records (docs/design.md says why).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import apache_beam as beam

from transforms import dead_letter as dl
from transforms import metrics
from transforms.aggregate import WindowedAggregates
from transforms.batching import BatchRecords
from transforms.dedup import DEFAULT_DEDUP_HORIZON_S, DeduplicateEvents
from transforms.event_time import AssignEventTime
from transforms.parse import FORMAT_JSON
from transforms.parse_validate import ParseEvents, ValidateEvents
from transforms.pseudonymize import PseudonymizeDeadLetters, PseudonymizeEvents
from transforms.validate import DEFAULT_MAX_CLOCK_SKEW_S
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
    # Unbounded input: too-late data is dead-lettered, windows fire early/on time/late, dedup state expires.
    streaming: bool = False
    timestamp_source: str = TIMESTAMP_PAYLOAD
    # A secret reference (env:NAME or a Secret Manager version) to the HMAC key; None = user_id kept as is.
    pseudonymization_key: str | None = None
    # The kind of source (kafka, pubsub, file, synthetic): records read are also counted as records_read_<kind>.
    source_kind: str = ""
    # CPython GC thresholds for the workers (transforms/batching.py: GC_THRESHOLDS), where they were measured to
    # help (bounded input on the direct runner); None leaves the collector alone.
    gc_thresholds: tuple[int, int, int] | None = None


def _count_dead_letter(row: dict) -> dict:
    metrics.counter(metrics.DEAD_LETTERS).inc()
    metrics.counter(metrics.dead_letters_with_code(row["error_code"])).inc()
    metrics.counter(metrics.dead_letters_at_stage(row["stage"])).inc()
    return row


class StreamingAnalytics(beam.PTransform):
    """SourceRecords or RecordBatches -> {"aggregates": rows, "dead_letters": rows}.

    batch -> parse -> validate -> (pseudonymize) -> event time -> dedup -> (unbounded: too-late filter) -> window
    (pre-aggregated per bundle) -> aggregate. Bounded and unbounded input differ in one place each, all decided by
    ``config.streaming``: the too-late filter (bounded input is never late), the trigger and lateness of the windows
    and the expiry of dedup state.
    """

    def __init__(self, config: AnalyticsConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, records):
        cfg = self._config
        args = (cfg.format, cfg.key_field, cfg.max_clock_skew_s, cfg.max_payload_bytes)
        batches = records | "BatchRecords" >> BatchRecords(gc_thresholds=cfg.gc_thresholds)
        parsed = batches | "ParseEvents" >> ParseEvents(*args, source_kind=cfg.source_kind)
        validated = parsed.parsed | "ValidateEvents" >> ValidateEvents(*args)
        valid = validated.valid
        if cfg.pseudonymization_key:
            # Before dedup and aggregation: sketches, keys and too_late dead letters only ever see pseudonyms.
            valid = valid | "PseudonymizeUserIds" >> PseudonymizeEvents(
                cfg.pseudonymization_key, cfg.key_field, cfg.format
            )
        timed = valid | "AssignEventTime" >> AssignEventTime(source_time=cfg.timestamp_source != TIMESTAMP_PAYLOAD)
        deduplicated = timed.rows | "DeduplicateEvents" >> DeduplicateEvents(cfg.dedup_horizon_s, expire=cfg.streaming)
        rows = deduplicated.rows
        dead = [
            parsed[dl.DEAD_LETTER_TAG],
            validated[dl.DEAD_LETTER_TAG],
            timed[dl.DEAD_LETTER_TAG],
            deduplicated[dl.DEAD_LETTER_TAG],
        ]
        extra_lateness = 0
        if cfg.streaming:
            filtered = rows | "FilterTooLate" >> FilterTooLate(cfg.window)
            rows = filtered.on_time
            dead.append(filtered[dl.DEAD_LETTER_TAG])
            extra_lateness = SAFETY_MARGIN_S
        windowed = rows | "WindowEvents" >> WindowEvents(cfg.window, cfg.streaming, extra_lateness)
        dead.append(windowed[dl.DEAD_LETTER_TAG])
        lateness = cfg.window.allowed_lateness_s + extra_lateness if cfg.streaming else None
        aggregates = windowed["partials"] | "WindowedAggregates" >> WindowedAggregates(lateness)
        return {AGGREGATES: aggregates, DEAD_LETTERS: _collect(dead, cfg)}


def _collect(dead: list, cfg: AnalyticsConfig) -> beam.PCollection:
    dead_letters = dead | "CollectDeadLetters" >> beam.Flatten()
    if cfg.pseudonymization_key:
        # Dead letters keep the original bytes: their user_id is pseudonymized too (or the payload withheld).
        dead_letters = dead_letters | "PseudonymizeDeadLetters" >> PseudonymizeDeadLetters(
            cfg.pseudonymization_key, cfg.format
        )
    return dead_letters | "CountDeadLetters" >> beam.Map(_count_dead_letter)
