"""Per (window, event_type, key) aggregates: count, exact value sum, HLL++ distinct users, pane metadata.

``Accumulator`` sums rows (pre-aggregated per bundle by ``windowing.WindowEvents``); ``WindowedAggregates`` merges
the partials per window and group and writes one row per pane. ``value_sum`` is exact up to the final rounding
(integers summed as integers, floats as Shewchuk partials), so the result does not depend on bundle boundaries,
batches or merge order: batch and streaming agree to the bit.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder, TupleCoder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, TimerSpec, on_timer
from apache_beam.transforms.window import GlobalWindows, IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from transforms import metrics
from transforms.records import ARRIVAL_US, EVENT_TIME_US, EVENT_TYPE, KEY, USER_ID, VALUE, Row
from transforms.sketch import DistinctSketch
from transforms.timefmt import format_rfc3339_us, now_us

GroupKey = tuple[str, "str | None"]


def add_float(partials: list[float], x: float) -> None:
    """Adds ``x`` to a list of non-overlapping partial sums, exactly (Shewchuk; as in ``math.fsum``)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        if math.isinf(hi):
            # x + y is beyond the double range: keep y as a partial of its own, so the sum stays exact.
            partials[i] = y
            i += 1
            continue
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


def exact_partials(values: list[float], limit: int = 8) -> list[float] | None:
    """Floats whose exact sum is the exact sum of ``values`` (few: usually one or two), or None.

    ``math.fsum`` is correctly rounded, so its result ``s`` is the leading part of the exact sum, and the sum of
    ``values + [-s]`` is the exact rest: repeated, this peels the exact sum into parts at C speed. None (the caller
    then adds one by one) if the parts do not end within ``limit`` or a partial sum overflows.
    """
    rest = list(values)
    parts: list[float] = []
    try:
        for _ in range(limit):
            total = math.fsum(rest)
            if total == 0.0:  # an exact sum of doubles is 0 or at least the smallest subnormal: never rounds to 0
                return parts
            if math.isinf(total):
                return None
            parts.append(total)
            rest.append(-total)
    except OverflowError:
        return None
    return None


class Accumulator:
    """Partial aggregate; picklable (Beam pickles combiner accumulators between stages).

    Besides the aggregate itself it keeps the newest arrival and event time it holds, for the latency metrics.
    """

    __slots__ = ("count", "int_sum", "float_partials", "sketch", "newest_arrival_us", "newest_event_us")

    def __init__(self) -> None:
        self.count = 0
        self.int_sum = 0
        self.float_partials: list[float] = []
        self.sketch = DistinctSketch()
        self.newest_arrival_us = _NONE_YET
        self.newest_event_us = _NONE_YET

    def add_rows(self, rows: Sequence[Row]) -> None:
        """Adds events, as rows (``records.Row``). The result does not depend on order or grouping: the integer sum
        and the exact sum of the floats do not."""
        if not rows:
            return
        self.count += len(rows)
        self.newest_arrival_us = max(self.newest_arrival_us, max(row[ARRIVAL_US] for row in rows))
        self.newest_event_us = max(self.newest_event_us, max(row[EVENT_TIME_US] for row in rows))
        values = [row[VALUE] for row in rows]
        floats = [value for value in values if type(value) is float]
        if not floats:
            self.int_sum += sum(values)
        else:
            if len(floats) < len(values):
                self.int_sum += sum(value for value in values if type(value) is int)
            parts = exact_partials(floats)
            for value in floats if parts is None else parts:
                add_float(self.float_partials, value)
        self.sketch.add_all([row[USER_ID] for row in rows])

    def merge(self, other: Accumulator) -> None:
        self.count += other.count
        self.newest_arrival_us = max(self.newest_arrival_us, other.newest_arrival_us)
        self.newest_event_us = max(self.newest_event_us, other.newest_event_us)
        self.int_sum += other.int_sum
        for partial in other.float_partials:
            add_float(self.float_partials, partial)
        self.sketch.merge(other.sketch)

    def value_sum(self) -> float:
        # One rounding of the exact total (rounding int_sum to a double first would round twice); a total beyond
        # the double range saturates to +-inf instead of failing the job.
        exact = sum(map(Fraction, self.float_partials), Fraction(self.int_sum))
        try:
            return float(exact)
        except OverflowError:
            return math.inf if exact > 0 else -math.inf

    def __reduce__(self):
        return (
            _rebuild_accumulator,
            (
                self.count,
                self.int_sum,
                self.float_partials,
                self.sketch.to_bytes(),
                self.newest_arrival_us,
                self.newest_event_us,
            ),
        )


# Newest arrival / event time of an accumulator without events: before every real instant.
_NONE_YET = -(1 << 63)


def _rebuild_accumulator(
    count: int, int_sum: int, partials: list[float], sketch: bytes, newest_arrival_us: int, newest_event_us: int
) -> Accumulator:
    acc = Accumulator()
    acc.count, acc.int_sum, acc.float_partials = count, int_sum, list(partials)
    acc.sketch = DistinctSketch.from_bytes(sketch)
    acc.newest_arrival_us, acc.newest_event_us = newest_arrival_us, newest_event_us
    return acc


class AggregateResult(NamedTuple):
    event_count: int
    value_sum: float
    distinct_users: int
    sketch: bytes
    newest_arrival_us: int  # of the events it holds: for the latency metrics
    newest_event_us: int


class MergeAggregatesFn(beam.CombineFn):
    """Partial aggregates (Accumulators of pre-aggregated events) -> an ``AggregateResult``."""

    def create_accumulator(self) -> Accumulator:
        return Accumulator()

    def add_input(self, acc: Accumulator, part: Accumulator) -> Accumulator:
        acc.merge(part)
        return acc

    def add_inputs(self, acc: Accumulator, parts: Iterable[Accumulator]) -> Accumulator:
        for part in parts:
            acc.merge(part)
        return acc

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        accumulators = iter(accumulators)
        merged = next(accumulators, None)
        if merged is None:
            return self.create_accumulator()
        for acc in accumulators:
            merged.merge(acc)
        return merged

    def extract_output(self, acc: Accumulator) -> AggregateResult:
        return AggregateResult(
            acc.count,
            acc.value_sum(),
            acc.sketch.estimate(),
            acc.sketch.to_bytes(),
            acc.newest_arrival_us,
            acc.newest_event_us,
        )


def preaggregate(
    rows: Iterable[Row], slicing: tuple[int, int], into: dict[tuple, Accumulator] | None = None
) -> dict[tuple, Accumulator]:
    """Rows (``records.Row``) -> {(slice start µs, event_type, key): acc}, added to the accumulators of ``into``
    when given.

    A slice (``windowing.slicer``: offset and step) is a stretch of event time whose instants all fall in the
    same windows, so one accumulator per slice lands in exactly the windows its events would have.
    """
    offset, step = slicing
    members: dict[tuple, list[tuple]] = {}
    for row in rows:
        when = row[EVENT_TIME_US]
        group = (when - (when - offset) % step, row[EVENT_TYPE], row[KEY])
        held = members.get(group)
        if held is None:
            members[group] = [row]
        else:
            held.append(row)
    partials = {} if into is None else into
    for group, held in members.items():
        acc = partials.get(group)
        if acc is None:
            acc = partials[group] = Accumulator()
        acc.add_rows(held)
    return partials


_TIMING = {
    PaneInfoTiming.EARLY: "EARLY",
    PaneInfoTiming.ON_TIME: "ON_TIME",
    PaneInfoTiming.LATE: "LATE",
    PaneInfoTiming.UNKNOWN: "UNKNOWN",
}


def aggregate_row(
    group: GroupKey, result: AggregateResult, window: Any, pane: PaneInfo, emitted_at_us: int
) -> dict[str, Any]:
    """The output row (``schemas/aggregates.bq.json``), JSON-ready: timestamps RFC 3339, bytes base64."""
    event_type, key = group
    count, value_sum, distinct, sketch = result[:4]
    return {
        "window_start": format_rfc3339_us(window.start.micros),
        "window_end": format_rfc3339_us(window.end.micros),
        "event_type": event_type,
        "key": key,
        "event_count": count,
        # JSON and BigQuery have no infinity: a total beyond the double range is null (the column is NULLABLE).
        "value_sum": value_sum if math.isfinite(value_sum) else None,
        "distinct_users": distinct,
        "distinct_users_sketch": base64.b64encode(sketch).decode("ascii"),
        "pane_timing": _TIMING.get(pane.timing, "UNKNOWN"),
        "pane_index": pane.index,
        "is_last_pane": pane.is_last,
        "emitted_at": format_rfc3339_us(emitted_at_us),
    }


class _FormatRowDoFn(beam.DoFn):
    """One row per window, group and pane, counted per pane timing; in streaming, the latency and freshness
    metrics (transforms/metrics.py) of what each row reflects."""

    def __init__(self, bounded: bool) -> None:
        self._bounded = bounded
        self._rows = metrics.counter(metrics.AGGREGATE_ROWS)
        self._by_timing = {
            timing: metrics.counter(metrics.aggregate_rows_with_timing(name)) for timing, name in _TIMING.items()
        }
        self._arrival_latency = metrics.distribution(metrics.LATENCY_ARRIVAL_TO_EMIT_MS)
        self._event_latency = metrics.distribution(metrics.LATENCY_EVENT_TO_EMIT_MS)
        self._arrival_buckets = metrics.LatencyBuckets(metrics.LATENCY_ARRIVAL_TO_EMIT_MS)
        self._event_buckets = metrics.LatencyBuckets(metrics.LATENCY_EVENT_TO_EMIT_MS)
        self._freshness = metrics.gauge(metrics.FRESHNESS_LAG_MS)
        self._newest_window_end_us = _NONE_YET

    def row(self, group: GroupKey, result: AggregateResult, window: Any, pane: PaneInfo) -> dict[str, Any] | None:
        """The row of a pane, counted; None for an empty pane."""
        if result[0] == 0:
            # An empty pane: no event of this group in it. In accumulating mode every real pane holds at least the
            # group's first event, so this carries nothing; a runner that closes a window whose state was already
            # cleared (Flink at the end of a bounded stream) can fire one.
            return None
        if self._bounded and not (pane.is_last and pane.timing == PaneInfoTiming.ON_TIME):
            # Bounded input gets exactly one pane per window and group, all on time, but runners do not all say so:
            # the FnApiRunner does not flag it last, Flink's batch mode gives no pane information at all (UNKNOWN).
            pane = _FINAL_PANE
        emitted_at_us = now_us()
        self._rows.inc()
        self._by_timing[pane.timing].inc()
        if not self._bounded:
            arrival_ms = (emitted_at_us - result.newest_arrival_us) // 1000
            event_ms = (emitted_at_us - result.newest_event_us) // 1000
            self._arrival_latency.update(arrival_ms)
            self._event_latency.update(event_ms)
            self._arrival_buckets.update(arrival_ms)
            self._event_buckets.update(event_ms)
            self._newest_window_end_us = max(self._newest_window_end_us, window.end.micros)
            self._freshness.set((emitted_at_us - self._newest_window_end_us) // 1000)
        return aggregate_row(group, result, window, pane, emitted_at_us)

    def process(
        self,
        element: tuple[GroupKey | PaneKey, AggregateResult],
        window=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        group, result = element
        if len(group) == 4:  # bounded input, fixed or sliding windows: the window is part of the key
            start_us, end_us, event_type, key = group
            window, group = IntervalWindow(Timestamp(micros=start_us), Timestamp(micros=end_us)), (event_type, key)
        row = self.row(group, result, window, pane)
        if row is not None:
            yield row


_FINAL_PANE = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
PaneKey = tuple[int, int, str, "str | None"]  # window start and end (µs), event_type, key


def _with_its_pane(
    element: tuple[GroupKey, AggregateResult], window=beam.DoFn.WindowParam, pane=beam.DoFn.PaneInfoParam
) -> tuple[PaneKey, tuple]:
    (event_type, key), result = element
    pane_info = (pane.is_first, pane.is_last, pane.timing, pane.index, pane.nonspeculative_index)
    return (window.start.micros, window.end.micros, event_type, key), (tuple(result), pane_info)


PaneRecord = tuple[PaneKey, tuple]  # ((start_us, end_us, event_type, key), (result, pane_info)), as _with_its_pane


def new_panes(counts: dict[int, int], panes: Sequence[PaneRecord]) -> tuple[list[PaneRecord], list[PaneRecord]]:
    """Of ``panes`` (one window and group), those to emit and those to hold back; ``counts``: the event count of every
    pane index seen so far, these included.

    A LATE pane whose count equals its predecessor's (index - 1) repeats it: no event arrived in between, and it is
    dropped. Its predecessor may not have arrived yet (Prism hands a window's closing LATE pane to the next step
    before its ON_TIME pane, seen), so such a LATE pane waits for it. Every other pane is emitted."""
    emit: list[PaneRecord] = []
    wait: list[PaneRecord] = []
    for pane in panes:
        _, (result, pane_info) = pane
        timing, index = pane_info[2], pane_info[3]
        if timing != PaneInfoTiming.LATE or index == 0:
            # A LATE first pane is a window that only late data made (a session it grew or merged): all new.
            emit.append(pane)
        elif index - 1 not in counts:
            wait.append(pane)
        elif counts[index - 1] != result[0]:
            emit.append(pane)
    return emit, wait


class _FormatNewPanesDoFn(_FormatRowDoFn):
    """Unbounded input: a LATE pane whose window and group got no event since the pane before is dropped
    (``new_panes``).

    In accumulating mode such a pane repeats the previous one. Runners emit one when a window expires although no
    late data arrived: Prism always does (it ignores the windowing strategy's closing behaviour), and Beam Python
    asks every runner for ``EMIT_ALWAYS``. The count of every pane is kept per window and group (in the global window,
    which never merges, whatever the windows), and a LATE pane that came before its predecessor waits for it, until
    the window expires: then it is emitted (a pane is never lost for want of its predecessor).
    """

    COUNTS = BagStateSpec("pane_counts", TupleCoder((VarIntCoder(), VarIntCoder())))
    WAITING = BagStateSpec("waiting_panes", FastPrimitivesCoder())
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, lateness_us: int) -> None:
        super().__init__(bounded=False)
        self._lateness_us = lateness_us

    def process(
        self,
        element: PaneRecord,
        counts=beam.DoFn.StateParam(COUNTS),
        waiting=beam.DoFn.StateParam(WAITING),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[dict[str, Any]]:
        (_, end_us, _, _), (result, pane_info) = element
        counts.add((pane_info[3], result[0]))
        held = list(waiting.read())
        if pane_info[2] == PaneInfoTiming.LATE or held:
            emit, wait = new_panes(dict(counts.read()), [*held, element])
            if held:
                waiting.clear()
            for pane in wait:
                waiting.add(pane)
        else:
            emit = [element]
        expiry.set(Timestamp(micros=end_us + self._lateness_us))
        for pane in emit:
            yield from self._rows_of([pane])

    @on_timer(EXPIRY)
    def expire(
        self, counts=beam.DoFn.StateParam(COUNTS), waiting=beam.DoFn.StateParam(WAITING)
    ) -> Iterator[dict[str, Any]]:
        held = list(waiting.read())
        counts.clear()
        waiting.clear()
        yield from self._rows_of(held)

    def _rows_of(self, panes: Iterable[PaneRecord]) -> Iterator[dict[str, Any]]:
        for (start_us, end_us, event_type, key), (result, pane_info) in panes:
            window = IntervalWindow(Timestamp(micros=start_us), Timestamp(micros=end_us))
            row = self.row((event_type, key), AggregateResult(*result), window, PaneInfo(*pane_info))
            if row is not None:
                yield row


class WindowedAggregates(beam.PTransform):
    """((event_type, key), partial Accumulator) in windows -> one aggregate row per (window, event_type, key) and
    pane, in the global window (the row names its window).

    ``lateness_s`` (unbounded input): the windows' allowed lateness; a LATE pane that repeats the one before it is
    dropped. None: bounded input, one final on-time pane per window and group.
    """

    def __init__(self, lateness_s: int | None = None) -> None:
        super().__init__()
        self._lateness_s = lateness_s

    def expand(self, partials):
        combined = partials | "Combine" >> beam.CombinePerKey(MergeAggregatesFn())
        if self._lateness_s is None:
            rows = combined | "ToRow" >> beam.ParDo(_FormatRowDoFn(bounded=True))
            return rows | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
        return (
            combined
            | "WithPane" >> beam.Map(_with_its_pane).with_output_types(tuple[tuple[int, int, str, str | None], Any])
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "ToRow" >> beam.ParDo(_FormatNewPanesDoFn((self._lateness_s + 1) * 1_000_000))
        )
