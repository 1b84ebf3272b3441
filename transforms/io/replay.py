"""Replaying recorded (arrival time, record) pairs as a stream with a simulated clock.

The watermark follows the arrival clock (minus the expected out-of-orderness), and processing time advances with
it, so early, on-time and late panes, and too-late records, behave as they would live, but an hour of traffic
replays in seconds. Built on Beam's TestStream, which the DirectRunner executes: this is for the embedded demo
and for tests, not for production runners.
"""

from __future__ import annotations

from collections.abc import Iterable

import apache_beam as beam
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from transforms.records import SourceRecord, SourceRecordCoder

_US = 1_000_000


def replay_stream(
    arrivals: Iterable[tuple[int, SourceRecord]], step_s: float = 10.0, out_of_order_s: float = 2.0
) -> TestStream:
    """A TestStream that delivers records at their arrival times, advancing watermark and processing time."""
    stream = TestStream(coder=SourceRecordCoder())
    step_us = int(step_s * _US)
    pending: list[beam.window.TimestampedValue] = []
    step_end: int | None = None

    def flush() -> None:
        if pending:
            stream.add_elements(list(pending))
            pending.clear()
        stream.advance_watermark_to(Timestamp(micros=step_end - int(out_of_order_s * _US)))
        stream.advance_processing_time(step_s)

    for arrival_us, record in arrivals:
        if step_end is None:
            step_end = arrival_us - arrival_us % step_us + step_us
        while arrival_us >= step_end:
            flush()
            step_end += step_us
        pending.append(beam.window.TimestampedValue(record, Timestamp(micros=arrival_us)))
    if step_end is not None:
        flush()
    return stream.advance_watermark_to_infinity()
