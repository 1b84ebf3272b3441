"""Dropping events whose ``event_id`` was already accepted within the dedup horizon (event time).

Keyed state per ``event_id`` with one event-time expiry timer: the state lives only until the watermark passes
``first event time + horizon``, so memory is bounded by (ids per horizon), not by stream length. This is leaner
than Beam's ``DeduplicatePerKey`` (no processing-time timer, no bag state); ``docs/benchmarks.md`` has figures.
"""

from __future__ import annotations

from collections.abc import Iterator

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms.parse import METRICS_NAMESPACE
from transforms.records import Event

DEFAULT_DEDUP_HORIZON_S = 600


def is_duplicate(first_seen_us: int | None, event_time_us: int, horizon_us: int) -> bool:
    """The dedup rule: same id, and event times at most ``horizon`` apart."""
    return first_seen_us is not None and abs(event_time_us - first_seen_us) <= horizon_us


class _DedupDoFn(beam.DoFn):
    FIRST_SEEN = ReadModifyWriteStateSpec("first_seen_us", VarIntCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us
        self._duplicates = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicates")

    def process(
        self,
        element: tuple[str, Event],
        first_seen=beam.DoFn.StateParam(FIRST_SEEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[Event]:
        event = element[1]
        if is_duplicate(first_seen.read(), event.event_time_us, self._horizon_us):
            self._duplicates.inc()
            return
        first_seen.write(event.event_time_us)
        expiry.set(Timestamp(micros=event.event_time_us + self._horizon_us))
        yield event

    @on_timer(EXPIRY)
    def expire(self, first_seen=beam.DoFn.StateParam(FIRST_SEEN)) -> None:
        first_seen.clear()


class DeduplicateEvents(beam.PTransform):
    """Timestamped Events -> Events with repeats of an ``event_id`` (within the horizon) dropped and counted."""

    def __init__(self, horizon_s: float = DEFAULT_DEDUP_HORIZON_S) -> None:
        super().__init__()
        self._horizon_us = int(horizon_s * 1_000_000)

    def expand(self, events):
        return (
            events
            | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e)).with_output_types(tuple[str, Event])
            | "DropRepeats" >> beam.ParDo(_DedupDoFn(self._horizon_us)).with_output_types(Event)
        )
