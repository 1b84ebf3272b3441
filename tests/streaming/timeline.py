"""Helpers for timeline tests: events as TestStream records, and aggregate rows reduced to what a test asserts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from apache_beam.testing.test_stream import TestStream
from apache_beam.utils.timestamp import Timestamp

from transforms.records import SourceRecord, SourceRecordCoder
from transforms.timefmt import format_rfc3339_us, parse_rfc3339_us

T0_US = parse_rfc3339_us("2024-01-01T00:00:00Z")


def at(seconds: float) -> Timestamp:
    """The instant ``seconds`` after T0 (2024-01-01T00:00:00Z)."""
    return Timestamp(micros=T0_US + int(seconds * 1_000_000))


def iso(seconds: float) -> str:
    return format_rfc3339_us(T0_US + int(seconds * 1_000_000))


def record(event_id: str, seconds: float, **fields: Any) -> SourceRecord:
    """A valid JSON event whose event_time is T0 + ``seconds``."""
    event = {"event_id": event_id, "event_type": "click", "user_id": f"u-{event_id}", "event_time": iso(seconds)}
    event.update(fields)
    return SourceRecord(orjson.dumps(event), "test")


def stream() -> TestStream:
    return TestStream(coder=SourceRecordCoder())


def pane(row: dict[str, Any]) -> tuple:
    """The part of an aggregate row a timeline asserts: (window_start, timing, index, count, value_sum)."""
    return (row["window_start"], row["pane_timing"], row["pane_index"], row["event_count"], row["value_sum"])


def window(start_s: float, end_s: float) -> tuple[str, str]:
    """The window [T0 + start_s, T0 + end_s) as aggregate rows name it."""
    return iso(start_s), iso(end_s)


def windowed_pane(row: dict[str, Any]) -> tuple[tuple[str, str], tuple]:
    return (row["window_start"], row["window_end"]), pane(row)


def per_window(expected: dict[tuple[str, str], list[tuple]]) -> Callable[[list], None]:
    """A matcher of ``windowed_pane``s: exactly these panes in each window (any order), and no other window."""

    def check(actual: list) -> None:
        got: dict[tuple[str, str], list[tuple]] = {}
        for window_bounds, one_pane in actual:
            got.setdefault(window_bounds, []).append(one_pane)
        assert {w: sorted(p) for w, p in got.items()} == {w: sorted(p) for w, p in expected.items()}, got

    return check
