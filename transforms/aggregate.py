"""Per (window, event_type, key) aggregates: count, exact value sum, HLL++ distinct users, pane metadata.

``value_sum`` is exact up to the final rounding (integers summed as integers, floats as Shewchuk partials), so
the result does not depend on bundle boundaries or merge order: batch and streaming agree to the bit.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Iterable, Iterator
from fractions import Fraction
from typing import Any

import apache_beam as beam
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.records import Event
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
    """Partial aggregate; picklable (Beam pickles combiner accumulators between stages)."""

    __slots__ = ("count", "int_sum", "float_partials", "sketch")

    def __init__(self) -> None:
        self.count = 0
        self.int_sum = 0
        self.float_partials: list[float] = []
        self.sketch = DistinctSketch()

    def add(self, event: Event) -> None:
        self.count += 1
        value = event.value
        if type(value) is int:
            self.int_sum += value
        else:
            add_float(self.float_partials, value)
        self.sketch.add(event.user_id)

    def add_rows(self, rows: list[tuple]) -> None:
        """``add`` for many events at once, as rows (event_id, event_time_us, event_type, key, user_id, value).

        The same result as adding them one by one: the integer sum and the exact sum of the floats do not depend on
        order or grouping.
        """
        self.count += len(rows)
        values = [row[5] for row in rows]
        floats = [value for value in values if type(value) is float]
        if not floats:
            self.int_sum += sum(values)
        else:
            if len(floats) < len(values):
                self.int_sum += sum(value for value in values if type(value) is int)
            parts = exact_partials(floats)
            for value in floats if parts is None else parts:
                add_float(self.float_partials, value)
        self.sketch.add_all([row[4] for row in rows])

    def merge(self, other: Accumulator) -> None:
        self.count += other.count
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
        return (_rebuild_accumulator, (self.count, self.int_sum, self.float_partials, self.sketch.to_bytes()))


def _rebuild_accumulator(count: int, int_sum: int, partials: list[float], sketch: bytes) -> Accumulator:
    acc = Accumulator()
    acc.count, acc.int_sum, acc.float_partials = count, int_sum, list(partials)
    acc.sketch = DistinctSketch.from_bytes(sketch)
    return acc


class AggregateFn(beam.CombineFn):
    """Events -> (event_count, value_sum, distinct_users, sketch bytes)."""

    def create_accumulator(self) -> Accumulator:
        return Accumulator()

    def add_input(self, acc: Accumulator, event: Event) -> Accumulator:
        acc.add(event)
        return acc

    def add_inputs(self, acc: Accumulator, events: Iterable[Event]) -> Accumulator:
        for event in events:
            acc.add(event)
        return acc

    def merge_accumulators(self, accumulators: Iterable[Accumulator]) -> Accumulator:
        accumulators = iter(accumulators)
        merged = next(accumulators, None)
        if merged is None:
            return self.create_accumulator()
        for acc in accumulators:
            merged.merge(acc)
        return merged

    def extract_output(self, acc: Accumulator) -> tuple[int, float, int, bytes]:
        return acc.count, acc.value_sum(), acc.sketch.estimate(), acc.sketch.to_bytes()


class MergeAggregatesFn(AggregateFn):
    """Partial aggregates (Accumulators of pre-aggregated slices) -> the same output as ``AggregateFn``."""

    def add_input(self, acc: Accumulator, part: Accumulator) -> Accumulator:
        acc.merge(part)
        return acc

    def add_inputs(self, acc: Accumulator, parts: Iterable[Accumulator]) -> Accumulator:
        for part in parts:
            acc.merge(part)
        return acc


def preaggregate(
    rows: Iterable[tuple], slicing: tuple[int, int], into: dict[tuple, Accumulator] | None = None
) -> dict[tuple, Accumulator]:
    """Rows (event_id, event_time_us, event_type, key, user_id, value) -> {(slice start µs, event_type, key): acc},
    added to the accumulators of ``into`` when given.

    A slice (``windowing.slicer``: offset and step) is a stretch of event time whose instants all fall in the
    same windows, so one accumulator per slice lands in exactly the windows its events would have.
    """
    offset, step = slicing
    members: dict[tuple, list[tuple]] = {}
    for row in rows:
        when = row[1]
        group = (when - (when - offset) % step, row[2], row[3])
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
    group: GroupKey, result: tuple[int, float, int, bytes], window: Any, pane: PaneInfo, emitted_at_us: int
) -> dict[str, Any]:
    """The output row (``schemas/aggregates.bq.json``), JSON-ready: timestamps RFC 3339, bytes base64."""
    event_type, key = group
    count, value_sum, distinct, sketch = result
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
    def __init__(self, bounded: bool) -> None:
        self._bounded = bounded
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "aggregate_rows")

    def process(
        self,
        element: tuple[GroupKey, tuple[int, float, int, bytes]],
        window=beam.DoFn.WindowParam,
        pane=beam.DoFn.PaneInfoParam,
    ) -> Iterator[dict[str, Any]]:
        if element[1][0] == 0:
            # An empty pane: no event of this group in it. In accumulating mode every real pane holds at least the
            # group's first event, so this carries nothing; it happens when a runner fires a window's end-of-window
            # and garbage-collection timers together after its state was cleared (Flink at the end of a bounded
            # stream), and with Python's EMIT_ALWAYS closing behaviour such a firing emits an empty pane.
            return
        self._rows.inc()
        if self._bounded and not (pane.is_last and pane.timing == PaneInfoTiming.ON_TIME):
            # Bounded input gets exactly one pane per window and group, all on time, but runners do not all say so:
            # the FnApiRunner does not flag it last, Flink's batch mode gives no pane information at all (UNKNOWN).
            pane = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
        yield aggregate_row(element[0], element[1], window, pane, now_us())


def _group_key(event: Event) -> tuple[GroupKey, Event]:
    return (event.event_type, event.key), event


class WindowedAggregates(beam.PTransform):
    """Windowed Events -> one aggregate row per (window, event_type, key) and pane."""

    def __init__(self, bounded: bool = False) -> None:
        super().__init__()
        self._bounded = bounded

    def expand(self, events):
        return (
            events
            | "KeyByTypeAndKey" >> beam.Map(_group_key)
            | "Combine" >> beam.CombinePerKey(AggregateFn())
            | "ToRow" >> beam.ParDo(_FormatRowDoFn(self._bounded))
        )
