"""The Flink/Kafka benchmark's arithmetic: which emitted row first counts a record, percentiles, completion time."""

from __future__ import annotations

import math

from benchmarks.flink_kafka import _completion_us, latencies, percentile
from transforms.timefmt import format_rfc3339_us

GROUP = ("2024-01-01T00:00:00Z", "click", "/home")
OTHER = ("2024-01-01T00:00:10Z", "click", "/home")


def _row(group, pane_index: int, count: int, emitted_s: float) -> dict:
    start, event_type, key = group
    return {
        "window_start": start,
        "event_type": event_type,
        "key": key,
        "pane_index": pane_index,
        "event_count": count,
        "emitted_at": format_rfc3339_us(int(emitted_s * 1_000_000)),
    }


def test_each_record_is_counted_in_the_first_pane_that_includes_it():
    published = {GROUP: [0, 1_000_000, 2_000_000], OTHER: [5_000_000]}
    rows = [
        _row(GROUP, 1, 3, 3.0),  # order of rows does not matter; the pane index does
        _row(GROUP, 0, 1, 1.5),
        _row(GROUP, 2, 3, 9.0),  # a later pane with no new record
        _row(("2024-01-01T00:01:00Z", "x", None), 0, 7, 0.5),  # not a measured group
    ]
    # record 0: pane 0 at 1.5 s; records 1 and 2: pane 1 at 3 s; OTHER was never emitted, so it is left out.
    assert sorted(latencies(published, rows)) == [1.0, 1.5, 2.0]


def test_completion_waits_for_every_group():
    published = {GROUP: [0, 1], OTHER: [2]}
    rows = [_row(GROUP, 0, 1, 1.0), _row(GROUP, 1, 2, 2.0)]
    assert _completion_us(published, rows) is None
    rows.append(_row(OTHER, 0, 1, 4.0))
    assert _completion_us(published, rows) == (1_000_000, 4_000_000)


def test_nearest_rank_percentiles():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0], 99) == 3.0
    assert math.isnan(percentile([], 50))
