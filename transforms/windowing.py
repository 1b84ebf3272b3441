"""Event-time windows and triggers, and catching data that is too late for them.

Plain Beam drops data that arrives after ``window end + allowed lateness`` without a trace. ``FilterTooLate``
sits before the window and sends such data to the dead letter (``too_late``) instead. A DoFn cannot read the
watermark, so the filter learns a lower bound of it from its own event-time timers: one at each live window's
deadline, plus a heartbeat while windows are live. Whatever it lets through, the windowing step accepts: the
window keeps state for a safety margin beyond the allowed lateness, so a late watermark estimate never turns
into silent loss (those records are aggregated in a LATE pane instead).
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.coders import FastPrimitivesCoder, VarIntCoder
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as beam_window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import MIN_TIMESTAMP, Timestamp

from transforms import dead_letter as dl
from transforms.parse import METRICS_NAMESPACE
from transforms.records import Event

FIXED = "fixed"
SLIDING = "sliding"
SESSION = "session"
WINDOW_KINDS = (FIXED, SLIDING, SESSION)

DEFAULT_LATE_FILTER_SHARDS = 8


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

    def trigger(self) -> triggers.TriggerFn:
        early = triggers.AfterProcessingTime(self.early_firing_s) if self.early_firing_s > 0 else None
        return triggers.AfterWatermark(early=early, late=triggers.AfterCount(1))

    @property
    def heartbeat_us(self) -> int:
        """How often (event time) the late filter refreshes its watermark estimate while windows are live."""
        span = self.gap_s if self.kind == SESSION else (self.period_s or self.size_s)
        return max(1, min(span, max(self.allowed_lateness_s, 1))) * 1_000_000

    @property
    def safety_margin_s(self) -> int:
        """Extra lateness the window accepts beyond the late filter's cut-off (see module docstring)."""
        return max(self.allowed_lateness_s, 2 * self.heartbeat_us // 1_000_000)


def latest_deadline_us(window_fn: beam_window.WindowFn, timestamp_us: int, lateness_us: int) -> int:
    """The last instant (µs) at which an element with this timestamp is still on time for one of its windows.

    For sliding windows an element belongs to several windows; it is too late only once it is too late for
    the newest of them (Beam drops it silently from the older ones; see docs/design.md).
    """
    ts = Timestamp(micros=timestamp_us)
    windows = window_fn.assign(beam_window.WindowFn.AssignContext(ts))
    return max(w.max_timestamp().micros for w in windows) + lateness_us


class _FilterTooLateDoFn(beam.DoFn):
    """Keyed by shard, in the global window (so the runner never drops anything here itself)."""

    WATERMARK = ReadModifyWriteStateSpec("watermark_lower_bound_us", VarIntCoder())
    PENDING = ReadModifyWriteStateSpec("pending_deadlines_us", FastPrimitivesCoder())
    NEXT_TICK = ReadModifyWriteStateSpec("next_tick_us", VarIntCoder())
    TICK = TimerSpec("tick", TimeDomain.WATERMARK)

    def __init__(self, spec: WindowSpec) -> None:
        self._spec = spec
        self._lateness_us = spec.allowed_lateness_s * 1_000_000
        self._too_late = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "too_late")

    def setup(self) -> None:
        self._window_fn = self._spec.window_fn()

    def process(
        self,
        element: tuple[int, Event],
        watermark=beam.DoFn.StateParam(WATERMARK),
        pending=beam.DoFn.StateParam(PENDING),
        next_tick=beam.DoFn.StateParam(NEXT_TICK),
        tick=beam.DoFn.TimerParam(TICK),
    ) -> Iterator[object]:
        event = element[1]
        deadline = latest_deadline_us(self._window_fn, event.event_time_us, self._lateness_us)
        lower_bound = watermark.read()
        if lower_bound is not None and deadline <= lower_bound:
            # The watermark is past this deadline: the window's GC has run or is due, Beam would drop it.
            self._too_late.inc()
            yield beam.pvalue.TaggedOutput(
                dl.DEAD_LETTER_TAG,
                dl.dead_letter(
                    dl.Rejection(
                        dl.TOO_LATE,
                        "event_time",
                        f"event is later than the allowed lateness of {self._spec.allowed_lateness_s} s "
                        f"for its window (deadline {Timestamp(micros=deadline).to_rfc3339()})",
                    ),
                    event.payload,
                    event.source,
                    event.metadata,
                    dl.STAGE_WINDOW,
                ),
            )
            return
        deadlines = pending.read() or []
        index = bisect.bisect_left(deadlines, deadline)
        if index == len(deadlines) or deadlines[index] != deadline:
            deadlines.insert(index, deadline)
            pending.write(deadlines)
            scheduled = next_tick.read()
            if scheduled is None or deadline < scheduled:
                tick.set(Timestamp(micros=deadline))
                next_tick.write(deadline)
        yield event

    @on_timer(TICK)
    def on_tick(
        self,
        fired_at=beam.DoFn.TimestampParam,
        watermark=beam.DoFn.StateParam(WATERMARK),
        pending=beam.DoFn.StateParam(PENDING),
        next_tick=beam.DoFn.StateParam(NEXT_TICK),
        tick=beam.DoFn.TimerParam(TICK),
    ) -> None:
        # The timer fired, so the input watermark is past ``fired_at``.
        now = fired_at.micros
        watermark.write(max(now, watermark.read() or MIN_TIMESTAMP.micros))
        deadlines = [d for d in (pending.read() or []) if d > now]
        pending.write(deadlines)
        if deadlines:
            upcoming = min(deadlines[0], now + self._spec.heartbeat_us)
            tick.set(Timestamp(micros=upcoming))
            next_tick.write(upcoming)
        else:
            next_tick.clear()


def _shard(event: Event, shards: int) -> tuple[int, Event]:
    return zlib.crc32(event.event_id.encode("utf-8")) % shards, event


class FilterTooLate(beam.PTransform):
    """Timestamped Events -> Events still on time for their window; the rest to ``dead_letter`` (too_late)."""

    def __init__(self, spec: WindowSpec, shards: int = DEFAULT_LATE_FILTER_SHARDS) -> None:
        super().__init__()
        self._spec = spec
        self._shards = shards

    def expand(self, events):
        shards = self._shards
        return (
            events
            | "Shard" >> beam.Map(_shard, shards).with_output_types(tuple[int, Event])
            | "Filter"
            >> beam.ParDo(_FilterTooLateDoFn(self._spec))
            .with_output_types(Event)
            .with_outputs(dl.DEAD_LETTER_TAG, main="on_time")
        )


class WindowEvents(beam.PTransform):
    """Assigns event-time windows with the early/on-time/late trigger and accumulating panes."""

    def __init__(self, spec: WindowSpec, extra_lateness_s: int = 0) -> None:
        super().__init__()
        self._spec = spec
        self._extra_lateness_s = extra_lateness_s

    def expand(self, events):
        return events | "Into" >> beam.WindowInto(
            self._spec.window_fn(),
            trigger=self._spec.trigger(),
            accumulation_mode=triggers.AccumulationMode.ACCUMULATING,
            allowed_lateness=self._spec.allowed_lateness_s + self._extra_lateness_s,
        )
