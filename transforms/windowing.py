"""Event-time windows and triggers, catching data too late for them, and pre-aggregation per bundle.

Plain Beam drops data that reaches a window after ``window end + allowed lateness`` without a trace.
``FilterTooLate`` sits before the window and sends such data to the dead letter (``too_late``) instead.

A DoFn cannot read the watermark, so lateness is judged by each record's *arrival time*: the timestamp its source
gave it (replay clock, Pub/Sub publish time, Kafka timestamp), kept on the Event as ``arrival_us``. A source never
lets its watermark pass records it has not emitted yet, and records in flight hold every downstream watermark, so
a record that arrived no later than ``window max timestamp + allowed lateness`` is still accepted by the window,
and one that arrived later is exactly one Beam would drop. The decision is per record, needs no state, and is the
same on every runner. The window keeps ``SAFETY_MARGIN_S`` of extra lateness for sources whose watermark runs a
little ahead of their timestamps (processing-time watermarks), so those records are aggregated, never lost.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import apache_beam as beam
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms import dead_letter as dl
from transforms import metrics
from transforms.aggregate import Accumulator, preaggregate
from transforms.guard import guarded
from transforms.records import ARRIVAL_US, EVENT_TIME_US, EVENT_TYPE, KEY, METADATA, PAYLOAD, Row, RowBatch, row_record

FIXED = "fixed"
SLIDING = "sliding"
SESSION = "session"
WINDOW_KINDS = (FIXED, SLIDING, SESSION)


@dataclass(frozen=True)
class WindowSpec:
    """What the window/trigger options say, in one value the transforms take."""

    kind: str = FIXED
    size_s: int = 60
    period_s: int | None = None  # sliding only; default size / 2... set by options
    gap_s: int = 300  # session only
    allowed_lateness_s: int = 600
    early_firing_s: int = 10  # 0 = no early panes

    def window_fn(self) -> beam_window.WindowFn:
        if self.kind == FIXED:
            return beam_window.FixedWindows(self.size_s)
        if self.kind == SLIDING:
            return beam_window.SlidingWindows(self.size_s, self.period_s or self.size_s)
        if self.kind == SESSION:
            return beam_window.Sessions(self.gap_s)
        raise ValueError(f"unknown window kind {self.kind!r}; expected one of {', '.join(WINDOW_KINDS)}")

    def trigger(self, streaming: bool = True) -> triggers.TriggerFn:
        if not streaming:
            # Bounded input: the watermark jumps to the end once, so each window gets one final on-time pane
            # (and the batch runner has no processing-time clock for early panes).
            return triggers.DefaultTrigger()
        early = triggers.AfterProcessingTime(self.early_firing_s) if self.early_firing_s > 0 else None
        return triggers.AfterWatermark(early=early, late=triggers.AfterCount(1))


SAFETY_MARGIN_S = 60


def slicer(window_fn: beam_window.WindowFn) -> tuple[int, int]:
    """(offset, step) in µs: event time ``t`` lies in the *slice* starting at ``t - (t - offset) % step``, a stretch
    of time whose instants all belong to the same windows.

    Fixed windows: the window itself. Sliding windows whose size is a multiple of the period: the period (every
    window starts on a period boundary and spans whole periods). Anything else (sessions, other sliding windows):
    the instant itself, which is trivially right. Batched pre-aggregation keeps one accumulator per slice.
    """
    if isinstance(window_fn, beam_window.FixedWindows):
        return window_fn.offset.micros, window_fn.size.micros
    if isinstance(window_fn, beam_window.SlidingWindows) and window_fn.size.micros % window_fn.period.micros == 0:
        return window_fn.offset.micros, window_fn.period.micros
    return 0, 1


def latest_deadline_us(window_fn: beam_window.WindowFn, timestamp_us: int, lateness_us: int) -> int:
    """The last instant (µs) at which an element with this timestamp is still on time for one of its windows:
    the newest window's max timestamp plus the allowed lateness.

    For sliding windows an element belongs to several windows; it is too late only once it is too late for
    the newest of them (Beam drops it silently from the older ones; see docs/design.md). Computed from the window
    function's parameters, as its ``assign`` would place the element (tests check both agree).
    """
    if isinstance(window_fn, beam_window.FixedWindows):
        size, offset = window_fn.size.micros, window_fn.offset.micros
        return timestamp_us - (timestamp_us - offset) % size + size - 1 + lateness_us
    if isinstance(window_fn, beam_window.SlidingWindows):
        period, offset = window_fn.period.micros, window_fn.offset.micros
        return timestamp_us - (timestamp_us - offset) % period + window_fn.size.micros - 1 + lateness_us
    if isinstance(window_fn, beam_window.Sessions):
        return timestamp_us + window_fn.gap_size.micros - 1 + lateness_us
    windows = window_fn.assign(beam_window.WindowFn.AssignContext(Timestamp(micros=timestamp_us)))
    return max(w.max_timestamp().micros for w in windows) + lateness_us


def _too_late_dead_letter(batch: RowBatch, index: int, spec: WindowSpec, deadline_us: int) -> dict[str, Any]:
    row = batch.rows[index]
    return dl.dead_letter(
        dl.Rejection(
            dl.TOO_LATE,
            "event_time",
            f"arrived at {Timestamp(micros=row[ARRIVAL_US]).to_rfc3339()}, later than its window's end plus the "
            f"allowed lateness of {spec.allowed_lateness_s} s ({Timestamp(micros=deadline_us).to_rfc3339()})",
        ),
        row[PAYLOAD],
        batch.source,
        row[METADATA],
        dl.STAGE_WINDOW,
    )


class _FilterTooLateDoFn(beam.DoFn):
    def __init__(self, spec: WindowSpec) -> None:
        self._spec = spec
        self._lateness_us = spec.allowed_lateness_s * 1_000_000
        self._too_late = metrics.counter(metrics.TOO_LATE)

    def setup(self) -> None:
        self._window_fn = self._spec.window_fn()

    def _split(self, batch: RowBatch, indices: Sequence[int]) -> tuple[list[Row], list[dict[str, Any]]]:
        on_time: list[Row] = []
        too_late: list[dict[str, Any]] = []
        window_fn, lateness_us, rows = self._window_fn, self._lateness_us, batch.rows
        for i in indices:
            row = rows[i]
            deadline = latest_deadline_us(window_fn, row[EVENT_TIME_US], lateness_us)
            if row[ARRIVAL_US] <= deadline:
                on_time.append(row)
            else:
                too_late.append(_too_late_dead_letter(batch, i, self._spec, deadline))
        return on_time, too_late

    def process(self, batch: RowBatch) -> Iterator[Any]:
        results, failed = guarded(
            lambda indices: self._split(batch, indices),
            range(len(batch.rows)),
            batch.record,
            dl.STAGE_WINDOW,
            "FilterTooLate",
        )
        too_late = [row for result in results for row in result[1]]
        if too_late:
            self._too_late.inc(len(too_late))
        for row in (*failed, *too_late):
            yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)
        on_time = results[0][0] if len(results) == 1 else [row for result in results for row in result[0]]
        if on_time:
            yield RowBatch(batch.source, on_time)


class FilterTooLate(beam.PTransform):
    """RowBatches -> the rows still on time for their window; the rest to ``dead_letter`` (too_late, stage window).

    Unbounded input only: bounded input is all on time (its watermark moves only at the end).
    """

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, batches):
        return batches | "Filter" >> beam.ParDo(_FilterTooLateDoFn(self._spec)).with_output_types(
            RowBatch
        ).with_outputs(dl.DEAD_LETTER_TAG, main="on_time")


# --- pre-aggregation per bundle ----------------------------------------------------------------------------------

GroupKey = tuple[str, "str | None"]
# Rows a pre-aggregating DoFn holds before folding them into its partial aggregates: folding in large runs keeps
# the number of accumulator merges per event small, holding bounds the memory of a long bundle.
FOLD_ROWS = 65536


class _SessionChain:
    """Events of one group whose proto-sessions ``[t, t + gap)`` overlap one after the other: one session so far.

    ``points`` are some of its event times whose proto-sessions chain from the first to the last (consecutive ones
    overlap): emitted as elements, they make the runner's session merging cover exactly this chain's extent.
    """

    __slots__ = ("first", "end", "points", "acc")

    def __init__(self, first: int, end: int, points: list[int], acc: Accumulator) -> None:
        self.first, self.end, self.points, self.acc = first, end, points, acc


def session_chains(rows: Sequence[Row], gap_us: int) -> dict[GroupKey, list[_SessionChain]]:
    """Rows -> per (event_type, key), their sessions (as ``Sessions.merge`` would merge the rows' proto-sessions)."""
    by_group: dict[GroupKey, list[Row]] = {}
    for row in rows:
        group = (row[EVENT_TYPE], row[KEY])
        members = by_group.get(group)
        if members is None:
            by_group[group] = [row]
        else:
            members.append(row)
    chains: dict[GroupKey, list[_SessionChain]] = {}
    for group, members in by_group.items():
        members.sort(key=lambda row: row[EVENT_TIME_US])
        found = chains[group] = []
        chain_rows: list[Row] = []
        first = end = last_point = previous = 0
        points: list[int] = []
        for row in members:
            when = row[EVENT_TIME_US]
            if chain_rows and when < end:
                if when >= last_point + gap_us:  # the last point's proto-session ends before this one starts
                    points.append(previous)
                    last_point = previous
                end = max(end, when + gap_us)
            else:
                if chain_rows:
                    found.append(_close_chain(first, end, points, last_point, previous, chain_rows))
                chain_rows = []
                first, end, points, last_point = when, when + gap_us, [when], when
            chain_rows.append(row)
            previous = when
        if chain_rows:
            found.append(_close_chain(first, end, points, last_point, previous, chain_rows))
    return chains


def _close_chain(first: int, end: int, points: list[int], last_point: int, last: int, rows: list[Row]) -> _SessionChain:
    if last != last_point:
        points.append(last)
    acc = Accumulator()
    acc.add_rows(rows)
    return _SessionChain(first, end, points, acc)


class _SlicedPartials:
    """Fixed and sliding windows: one accumulator per (slice, event_type, key) (``slicer``); a partial is stamped
    with its slice's start, which the window function assigns to exactly the windows of every instant in it."""

    def __init__(self, window_fn: beam_window.WindowFn) -> None:
        self._slicing = slicer(window_fn)
        self._partials: dict[tuple[int, str, str | None], Accumulator] = {}

    def fold(self, rows: Sequence[Row]) -> dict:
        return preaggregate(rows, self._slicing)

    def merge(self, folded: dict) -> None:
        partials = self._partials
        for slot, acc in folded.items():
            held = partials.get(slot)
            if held is None:
                partials[slot] = acc
            else:
                held.merge(acc)

    def outputs(self) -> Iterator[tuple[int, GroupKey, Accumulator]]:
        for (start, event_type, key), acc in self._partials.items():
            yield start, (event_type, key), acc


class _SessionPartials:
    """Session windows: one accumulator per session chain of a group, stamped with its first event time, plus
    empty accumulators at the chain's other points, so the runner merges the proto-sessions into this extent."""

    def __init__(self, window_fn: beam_window.Sessions) -> None:
        self._gap_us = window_fn.gap_size.micros
        self._chains: dict[GroupKey, list[_SessionChain]] = {}

    def fold(self, rows: Sequence[Row]) -> dict:
        return session_chains(rows, self._gap_us)

    def merge(self, folded: dict) -> None:
        for group, chains in folded.items():
            self._chains.setdefault(group, []).extend(chains)

    def outputs(self) -> Iterator[tuple[int, GroupKey, Accumulator]]:
        for group, chains in self._chains.items():
            chains.sort(key=lambda chain: chain.first)
            merged: _SessionChain | None = None
            for chain in chains:
                if merged is not None and chain.first < merged.end:  # as Sessions.merge: overlapping, not touching
                    merged.end = max(merged.end, chain.end)
                    merged.points.extend(chain.points)
                    merged.acc.merge(chain.acc)
                    continue
                if merged is not None:
                    yield from self._elements(group, merged)
                merged = chain
            if merged is not None:
                yield from self._elements(group, merged)

    @staticmethod
    def _elements(group: GroupKey, chain: _SessionChain) -> Iterator[tuple[int, GroupKey, Accumulator]]:
        yield chain.first, group, chain.acc
        for point in sorted(set(chain.points) - {chain.first}):
            yield point, group, Accumulator()


def bundle_partials(window_fn: beam_window.WindowFn) -> _SlicedPartials | _SessionPartials:
    """Partial aggregates of a bundle for ``window_fn``: ``fold(rows)`` computes some (without side effects),
    ``merge`` takes them in, ``outputs()`` gives (timestamp µs, group, accumulator) to window by ``window_fn``."""
    if isinstance(window_fn, beam_window.Sessions):
        return _SessionPartials(window_fn)
    return _SlicedPartials(window_fn)


class _PreAggregateDoFn(beam.DoFn):
    """Sums a bundle's rows per window slice (or session chain) and group; emits the partials when the bundle
    finishes, in the global window, stamped so that ``WindowInto`` assigns each the windows of its events.

    Its memory is bounded by groups x windows x sketch size plus ``FOLD_ROWS`` held rows, however large the bundle.

    ``windows_in_key``: each partial goes out once per window of its events, keyed by (window start µs, window end
    µs, event_type, key), and stays in the global window (bounded input, non-merging windows; see WindowEvents).
    """

    def __init__(self, spec: WindowSpec, windows_in_key: bool = False) -> None:
        self._spec = spec
        self._windows_in_key = windows_in_key

    def setup(self) -> None:
        self._window_fn = self._spec.window_fn()

    def start_bundle(self) -> None:
        self._partials = bundle_partials(self._window_fn)
        self._held: list[RowBatch] = []
        self._held_rows = 0

    def process(self, batch: RowBatch) -> Iterator[beam.pvalue.TaggedOutput]:
        self._held.append(batch)
        self._held_rows += len(batch.rows)
        if self._held_rows >= FOLD_ROWS:
            for row in self._fold()[0]:
                yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)

    def _fold(self) -> tuple[list[dict[str, Any]], int]:
        """Folds the held rows into the partials; returns the dead letters of rows that made it throw, and the
        earliest arrival of the rows held (their timestamp)."""
        held, self._held, self._held_rows = self._held, [], 0
        partials = self._partials
        try:
            partials.merge(partials.fold([row for batch in held for row in batch.rows]))
            return [], 0
        except Exception:  # noqa: BLE001 - one record must not fail the bundle: find it, batch by batch, row by row
            pass
        failed: list[dict[str, Any]] = []
        for batch in held:
            results, dead = guarded(
                partials.fold, batch.rows, partial(row_record, batch.source), dl.STAGE_WINDOW, "WindowEvents"
            )
            for result in results:
                partials.merge(result)
            failed.extend(dead)
        return failed, min(row[ARRIVAL_US] for batch in held for row in batch.rows)

    def finish_bundle(self) -> Iterator[Any]:
        everywhere = GlobalWindow()
        failed, arrival_us = self._fold()
        for row in failed:
            yield beam.pvalue.TaggedOutput(
                dl.DEAD_LETTER_TAG, WindowedValue(row, Timestamp(micros=arrival_us), [everywhere])
            )
        if not self._windows_in_key:
            for timestamp_us, group, acc in self._partials.outputs():
                yield WindowedValue((group, acc), Timestamp(micros=timestamp_us), [everywhere])
            return
        for timestamp_us, (event_type, key), acc in self._partials.outputs():
            at = Timestamp(micros=timestamp_us)
            for window in self._window_fn.assign(beam_window.WindowFn.AssignContext(at)):
                slot = (window.start.micros, window.end.micros, event_type, key)
                yield WindowedValue((slot, acc), at, [everywhere])


class WindowEvents(beam.PTransform):
    """RowBatches -> {"partials": ((event_type, key), partial Accumulator) in their windows, with the trigger
    (early/on-time/late panes, accumulating), "dead_letter": rows}.

    Each bundle's rows are pre-aggregated per (window slice or session chain, event_type, key), so the triggered
    combine downstream sees a few partials per bundle, not events. ``streaming``: the unbounded trigger and the
    allowed lateness (plus ``extra_lateness_s``); bounded input gets one final pane per window.

    Bounded input with fixed or sliding windows: the window is part of the key and the partials stay in the global
    window (``WindowedAggregates`` reads the window back from the key). The rows are the same; a windowed
    ``GroupByKey`` costs the direct runner a trigger state machine per key and window (a quarter of the 1M-event
    batch job, docs/benchmarks.md), a global one nothing. Unbounded input needs the trigger; session windows, which
    merge, need the runner's windows.
    """

    def __init__(self, spec: WindowSpec, streaming: bool = True, extra_lateness_s: int = 0) -> None:
        super().__init__()
        self._spec = spec
        self._streaming = streaming
        self._extra_lateness_s = extra_lateness_s

    def expand(self, batches):
        spec = self._spec
        windows_in_key = not self._streaming and not spec.window_fn().is_merging()
        partials = batches | "PreAggregate" >> beam.ParDo(_PreAggregateDoFn(spec, windows_in_key)).with_outputs(
            dl.DEAD_LETTER_TAG, main="partials"
        )
        if windows_in_key:
            return {"partials": partials.partials, dl.DEAD_LETTER_TAG: partials[dl.DEAD_LETTER_TAG]}
        windowed = partials.partials | "Into" >> beam.WindowInto(
            spec.window_fn(),
            trigger=spec.trigger(self._streaming),
            accumulation_mode=triggers.AccumulationMode.ACCUMULATING,
            # Bounded input is all on time: no lateness, so the single pane is also the last.
            allowed_lateness=spec.allowed_lateness_s + self._extra_lateness_s if self._streaming else 0,
        )
        return {"partials": windowed, dl.DEAD_LETTER_TAG: partials[dl.DEAD_LETTER_TAG]}
