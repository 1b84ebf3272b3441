"""Dropping events whose ``event_id`` was already accepted within the dedup horizon (event time).

Streaming: keyed state per ``event_id`` with one event-time expiry timer, so the state lives only until the
watermark passes ``first event time + horizon``: memory is bounded by the ids seen per horizon, not by stream
length. Bounded input: a GroupByKey on ``event_id`` with the same rule, many times faster on batch runners than
per-key state and timers (and than Beam's ``DeduplicatePerKey``); docs/benchmarks.md has the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms import dead_letter as dl
from transforms.guard import dead_letter_on_error
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.records import Event

DEFAULT_DEDUP_HORIZON_S = 600
DEDUP_IMPLS = ("auto", "state", "group", "beam", "off")
UNIQUE = "unique"


def is_duplicate(first_seen_us: int | None, event_time_us: int, horizon_us: int) -> bool:
    """The dedup rule: same id, and event times at most ``horizon`` apart."""
    return first_seen_us is not None and abs(event_time_us - first_seen_us) <= horizon_us


# A valid event as the bounded-input dedup and the aggregates see it (transforms/batched.py).
Row = tuple[str, int, str, "str | None", str, "int | float"]  # event_id, event_time_us, event_type, key, user_id, value


def _row_order(row: Row) -> tuple:
    """Copies of one id are taken in event-time order; ties by what the aggregates see, so the kept copy (and so the
    result) never depends on arrival or bundle order. Copies equal in all of these are interchangeable."""
    _, when, event_type, key, user_id, value = row
    return when, event_type, key is not None, key or "", user_id, value


def keep_first_per_horizon(rows: list[Row], horizon_us: int) -> tuple[list[Row], int]:
    """All rows of some ids (bounded input) -> (the rows kept, how many were duplicates); the order is kept.

    Per id: the earliest copy is kept, later copies within the horizon of the last kept one are dropped.
    """
    first: dict[str, Row] = {}
    repeats: list[Row] = []
    for row in rows:
        if first.setdefault(row[0], row) is not row:
            repeats.append(row)
    if not repeats:
        return rows, 0
    copies: dict[str, list[Row]] = {}
    for row in repeats:
        copies.setdefault(row[0], [first[row[0]]]).append(row)
    dropped: set[int] = set()  # by identity: identical copies are equal tuples
    for group in copies.values():
        group.sort(key=_row_order)
        first_seen = None
        for row in group:
            if is_duplicate(first_seen, row[1], horizon_us):
                dropped.add(id(row))
            else:
                first_seen = row[1]
    return [row for row in rows if id(row) not in dropped], len(dropped)


class _DedupDoFn(beam.DoFn):
    FIRST_SEEN = ReadModifyWriteStateSpec("first_seen_us", VarIntCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us
        self._duplicates = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicates")

    @dead_letter_on_error(dl.STAGE_DEDUP, "DeduplicateEvents")
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


def _row_of(event: Event) -> Row:
    return event.event_id, event.event_time_us, event.event_type, event.key, event.user_id, event.value


class _KeepFirstPerHorizonDoFn(beam.DoFn):
    """All events of one id at once (bounded input): keep the earliest, drop repeats within the horizon."""

    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us
        self._duplicates = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicates")

    @dead_letter_on_error(dl.STAGE_DEDUP, "DeduplicateEvents")
    def process(self, element: tuple[str, Iterable[Event]]) -> Iterator[beam.window.TimestampedValue]:
        events = list(element[1])
        if len(events) > 1:
            events.sort(key=lambda e: _row_order(_row_of(e)))
        first_seen = None
        for event in events:
            if is_duplicate(first_seen, event.event_time_us, self._horizon_us):
                self._duplicates.inc()
                continue
            first_seen = event.event_time_us
            yield beam.window.TimestampedValue(event, Timestamp(micros=event.event_time_us))


def _guarded(dofn: beam.DoFn, label: str) -> beam.PTransform:
    """The DoFn with its ``dead_letter`` output; the ParDo inside gets an explicit label (docs/updating-jobs.md)."""
    pardo = beam.ParDo(dofn).with_output_types(Event)
    pardo.label = label
    return pardo.with_outputs(dl.DEAD_LETTER_TAG, main=UNIQUE)


def _outputs(guarded: beam.pvalue.DoOutputsTuple) -> dict[str, beam.PCollection]:
    return {UNIQUE: guarded[UNIQUE], dl.DEAD_LETTER_TAG: guarded[dl.DEAD_LETTER_TAG]}


class DeduplicateEvents(beam.PTransform):
    """Timestamped Events -> ``{"unique": Events, "dead_letter": rows}``: repeats of an ``event_id`` (within the
    horizon) dropped and counted; an event that makes the step throw is a dead letter (stage ``dedup``).

    The ``beam`` and ``off`` implementations (benchmarks only) have no ``dead_letter`` output.
    """

    def __init__(self, horizon_s: float = DEFAULT_DEDUP_HORIZON_S, impl: str = "auto", bounded: bool = False) -> None:
        super().__init__()
        if impl not in DEDUP_IMPLS:
            raise ValueError(f"unknown dedup implementation {impl!r}; expected one of {', '.join(DEDUP_IMPLS)}")
        self._horizon_s = horizon_s
        self._horizon_us = int(horizon_s * 1_000_000)
        self._impl = impl if impl != "auto" else ("group" if bounded else "state")

    def expand(self, events):
        if self._impl == "off":
            return {UNIQUE: events}
        if self._impl == "group":
            # Bounded input: the watermark moves only at the end, so no expiry timer could fire before then. A
            # plain GroupByKey (no per-key state or timer calls) does the same job many times faster.
            return _outputs(
                events
                | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e)).with_output_types(tuple[str, Event])
                | "GroupById" >> beam.GroupByKey()
                | "KeepFirst" >> _guarded(_KeepFirstPerHorizonDoFn(self._horizon_us), "Keep")
            )
        if self._impl == "beam":
            return {
                UNIQUE: events
                | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e)).with_output_types(tuple[str, Event])
                | "BeamDeduplicate" >> DeduplicatePerKey(event_time_duration=Duration.of(self._horizon_s))
                | "Values" >> beam.Values().with_output_types(Event)
            }
        return _outputs(
            events
            | "KeyByEventId" >> beam.Map(lambda e: (e.event_id, e)).with_output_types(tuple[str, Event])
            | "DropRepeats" >> _guarded(_DedupDoFn(self._horizon_us), "Drop")
        )
