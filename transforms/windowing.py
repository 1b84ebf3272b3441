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

from collections.abc import Iterator
from dataclasses import dataclass

import apache_beam as beam
from apache_beam.transforms import trigger as triggers
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp

from transforms import dead_letter as dl
from transforms.guard import dead_letter_on_error
from transforms.parse import METRICS_NAMESPACE
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
