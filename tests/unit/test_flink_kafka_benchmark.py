"""The Flink/Kafka benchmark's arithmetic: which emitted row first counts a record, percentiles, completion time, and
the plain-loop baseline's counts."""

from __future__ import annotations

import math
from collections import Counter

from benchmarks.flink_kafka import _CLEAN, _completion_us, _final_counts, _group, _job_argv, latencies, percentile
from benchmarks.plain_loop import run_plain_loop_on
from pipelines.spec import resolve
from pipelines.summary import read_rows
from transforms.io.synthetic import generate_block, parse_synthetic_uri
from transforms.timefmt import format_rfc3339_us, now_us

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


def test_the_plain_loop_baseline_counts_what_the_backlog_published(tmp_path):
    # The backlog's own groups are the expectation; the plain loop's rows must be found and equal to them (they were
    # written under a name read_rows did not match, so every Flink row said the baseline's counts differed).
    spec = parse_synthetic_uri(f"synthetic://?rate=100&seed=101&{_CLEAN}")
    payloads = [payload for _, _, payload in generate_block(spec, 0, 3_000, anchor_us=now_us() - 60_000_000)]
    config = resolve(_job_argv("127.0.0.1:9", "t", tmp_path, ["--runner=DirectRunner"], [])).analytics

    counters = run_plain_loop_on(iter([("kafka://127.0.0.1:9/t", payloads)]), str(tmp_path), config)

    rows = read_rows(str(tmp_path / "aggregates"))[1]
    assert counters["events_valid"] == len(payloads) and len(rows) == counters["aggregate_rows"] > 0
    assert _final_counts(rows) == Counter(_group(payload) for payload in payloads)
