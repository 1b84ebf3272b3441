"""Graphs that only benchmarks run, assembled from the job's own transforms (the job itself has no switches).

``WithoutDedup``: the analytics graph with the dedup step left out, to show how much memory the rest of the job
needs (dedup's state grows with the distinct event ids of bounded input).
"""

from __future__ import annotations

import apache_beam as beam

from transforms import dead_letter as dl
from transforms.aggregate import WindowedAggregates
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig
from transforms.batching import BatchRecords
from transforms.event_time import AssignEventTime
from transforms.parse_validate import ParseEvents, ValidateEvents
from transforms.windowing import WindowEvents


class WithoutDedup(beam.PTransform):
    """Bounded input: ``StreamingAnalytics`` minus ``DeduplicateEvents`` (and so every duplicate is counted)."""

    def __init__(self, config: AnalyticsConfig) -> None:
        super().__init__()
        self._config = config

    def expand(self, records):
        cfg = self._config
        args = (cfg.format, cfg.key_field, cfg.max_clock_skew_s, cfg.max_payload_bytes)
        parsed = (
            records
            | "BatchRecords" >> BatchRecords(gc_thresholds=cfg.gc_thresholds)
            | "ParseEvents" >> ParseEvents(*args)
        )
        validated = parsed.parsed | "ValidateEvents" >> ValidateEvents(*args)
        timed = validated.valid | "AssignEventTime" >> AssignEventTime()
        windowed = timed.rows | "WindowEvents" >> WindowEvents(cfg.window, streaming=False)
        aggregates = windowed["partials"] | "WindowedAggregates" >> WindowedAggregates()
        dead = (
            parsed[dl.DEAD_LETTER_TAG],
            validated[dl.DEAD_LETTER_TAG],
            timed[dl.DEAD_LETTER_TAG],
            windowed[dl.DEAD_LETTER_TAG],
        ) | "CollectDeadLetters" >> beam.Flatten()
        return {AGGREGATES: aggregates, DEAD_LETTERS: dead}
