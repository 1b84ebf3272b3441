"""Event-time windows and triggers, and catching data that is too late for them.

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

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp

from transforms import dead_letter as dl
from transforms.guard import dead_letter_on_error
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.records import Event

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


def windowed_partials(
    partials: dict[tuple[int, str, str | None], Any], window_fn: beam_window.WindowFn, merge: Callable[[Any, Any], Any]
) -> Iterator[tuple[beam_window.IntervalWindow, int, tuple[str, str | None], Any]]:
    """Per-slice partial aggregates -> (window, timestamp, group, partial) in the windows their events belong to.

    Fixed and sliding windows: each slice goes to the windows ``window_fn`` assigns to its start (all its instants
    share them). Sessions: each instant's proto-session ``[t, t + gap)`` is merged with the ones it overlaps,
    exactly as ``Sessions.merge`` does; the GroupByKey downstream then merges these sessions across bundles (the
    union of overlapping intervals does not depend on the order they are merged in). The timestamp is the
    earliest instant of the partial, inside its window.
    """
    if not isinstance(window_fn, beam_window.Sessions):
        windows: dict[int, list] = {}
        for (start, event_type, key), partial in partials.items():
            assigned = windows.get(start)
            if assigned is None:
                context = beam_window.WindowFn.AssignContext(Timestamp(micros=start))
                assigned = windows[start] = window_fn.assign(context)
            for window in assigned:
                yield window, start, (event_type, key), partial
        return
    gap = window_fn.gap_size.micros
    by_group: dict[tuple[str, str | None], list[tuple[int, Any]]] = {}
    for (start, event_type, key), partial in partials.items():
        by_group.setdefault((event_type, key), []).append((start, partial))
    for group, members in by_group.items():
        members.sort(key=lambda member: member[0])
        first, end, merged = None, 0, None
        for start, partial in members:
            if merged is not None and end > start:
                merged = merge(merged, partial)
                end = max(end, start + gap)
                continue
            if merged is not None:
                yield beam_window.IntervalWindow(Timestamp(micros=first), Timestamp(micros=end)), first, group, merged
            first, end, merged = start, start + gap, partial
        if merged is not None:
            yield beam_window.IntervalWindow(Timestamp(micros=first), Timestamp(micros=end)), first, group, merged


def latest_deadline_us(window_fn: beam_window.WindowFn, timestamp_us: int, lateness_us: int) -> int:
    """The last instant (µs) at which an element with this timestamp is still on time for one of its windows.

    For sliding windows an element belongs to several windows; it is too late only once it is too late for
    the newest of them (Beam drops it silently from the older ones; see docs/design.md).
    """
    ts = Timestamp(micros=timestamp_us)
    windows = window_fn.assign(beam_window.WindowFn.AssignContext(ts))
    return max(w.max_timestamp().micros for w in windows) + lateness_us


class _FilterTooLateDoFn(beam.DoFn):
    def __init__(self, spec: WindowSpec) -> None:
        self._spec = spec
        self._lateness_us = spec.allowed_lateness_s * 1_000_000
        self._too_late = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "too_late")

    def setup(self) -> None:
        self._window_fn = self._spec.window_fn()

    @dead_letter_on_error(dl.STAGE_WINDOW, "FilterTooLate")
    def process(self, event: Event) -> Iterator[object]:
        deadline = latest_deadline_us(self._window_fn, event.event_time_us, self._lateness_us)
        if event.arrival_us <= deadline:
            yield event
            return
        self._too_late.inc()
        yield beam.pvalue.TaggedOutput(
            dl.DEAD_LETTER_TAG,
            dl.dead_letter(
                dl.Rejection(
                    dl.TOO_LATE,
                    "event_time",
                    f"arrived at {Timestamp(micros=event.arrival_us).to_rfc3339()}, later than its window's end plus "
                    f"the allowed lateness of {self._spec.allowed_lateness_s} s "
                    f"({Timestamp(micros=deadline).to_rfc3339()})",
                ),
                event.payload,
                event.source,
                event.metadata,
                dl.STAGE_WINDOW,
            ),
        )


class FilterTooLate(beam.PTransform):
    """Events -> Events still on time for their window; the rest to ``dead_letter`` (too_late, stage window)."""

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, events):
        return events | "Filter" >> beam.ParDo(_FilterTooLateDoFn(self._spec)).with_output_types(Event).with_outputs(
            dl.DEAD_LETTER_TAG, main="on_time"
        )


class WindowEvents(beam.PTransform):
    """Assigns event-time windows with the early/on-time/late trigger and accumulating panes."""

    def __init__(self, spec: WindowSpec, streaming: bool = True, extra_lateness_s: int = 0) -> None:
        super().__init__()
        self._spec = spec
        self._streaming = streaming
        self._extra_lateness_s = extra_lateness_s

    def expand(self, events):
        return events | "Into" >> beam.WindowInto(
            self._spec.window_fn(),
            trigger=self._spec.trigger(self._streaming),
            accumulation_mode=triggers.AccumulationMode.ACCUMULATING,
            # Bounded input is all on time: no lateness, so the single pane is also the last.
            allowed_lateness=self._spec.allowed_lateness_s + self._extra_lateness_s if self._streaming else 0,
        )
