"""The whole graph on bounded input equals a plain per-record reference computed here, for every window kind.

The reference takes each record on its own, with the contract's reference functions (``parse_record``,
``EventValidator``), the dedup rule in input order, ``window_fn.assign`` per event (sessions merged as
``Sessions.merge`` does) and one accumulator per window and group. The graph batches, shards, pre-aggregates per
bundle and merges partials; both must give the same rows, dead letters and counters, however the input is cut into
batches.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.transforms import window as beam_window
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from pipelines.summary import counters
from transforms.aggregate import Accumulator, MergeAggregatesFn, aggregate_row
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.dead_letter import Rejection, dead_letter
from transforms.dedup import is_duplicate
from transforms.io.synthetic import generate, parse_synthetic_uri
from transforms.parse import decoder_for, parse_record
from transforms.records import RecordBatch, SourceRecord
from transforms.validate import EventValidator
from transforms.windowing import WindowSpec

MIX = "events=2500&rate=2&keys=6&users=80&event_types=3&bad=0.05&duplicates=0.05&late=0.05&seed=5"
FINAL = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)


def synthetic_records() -> list[SourceRecord]:
    return [
        SourceRecord(p, "synthetic", {"sequence": s})
        for s, _, p in generate(parse_synthetic_uri(f"synthetic://?{MIX}"))
    ]


def _comparable(tag: str, row: dict) -> bytes:
    drop = {AGGREGATES: "emitted_at", DEAD_LETTERS: "failed_at"}[tag]
    return orjson.dumps({k: v for k, v in row.items() if k != drop}, option=orjson.OPT_SORT_KEYS)


def reference(records: list[SourceRecord], config: AnalyticsConfig) -> tuple[dict[str, Counter], dict[str, int]]:
    decode = decoder_for(config.format)
    validator = EventValidator(config.key_field, config.max_clock_skew_s)
    dead: list[dict] = []
    events = []
    for record in records:
        parsed = parse_record(record, decode, config.max_payload_bytes)
        if type(parsed) is Rejection:
            dead.append(dead_letter(parsed, record.payload, record.source, record.metadata, "parse"))
            continue
        event = validator.validate(parsed, record)
        if type(event) is Rejection:
            dead.append(dead_letter(event, record.payload, record.source, record.metadata, "validate"))
            continue
        events.append(event)
    first_seen: dict[str, int] = {}
    kept, duplicates = [], 0
    horizon_us = config.dedup_horizon_s * 1_000_000
    for event in events:
        if is_duplicate(first_seen.get(event.event_id), event.event_time_us, horizon_us):
            duplicates += 1
            continue
        first_seen[event.event_id] = event.event_time_us
        kept.append(event)
    window_fn = config.window.window_fn()
    groups: dict[tuple, list] = {}
    for event in kept:
        # Beam's windows travel through a shuffle with millisecond precision (its interval window coder), so a
        # session's bounds are its event times cut to the millisecond, on every runner.
        when = event.event_time_us if not window_fn.is_merging() else event.event_time_us // 1000 * 1000
        context = beam_window.WindowFn.AssignContext(Timestamp(micros=when))
        for window in window_fn.assign(context):
            groups.setdefault(((event.event_type, event.key), window), []).append(event)
    if window_fn.is_merging():
        groups = _merge_sessions(groups)
    rows = []
    for (group, window), members in groups.items():
        acc = Accumulator()
        acc.add_rows(
            [(e.event_id, e.event_time_us, e.event_type, e.key, e.user_id, e.value, 0, b"", None) for e in members]
        )
        rows.append(aggregate_row(group, MergeAggregatesFn().extract_output(acc), window, FINAL, 0))
    outputs = {
        AGGREGATES: Counter(_comparable(AGGREGATES, row) for row in rows),
        DEAD_LETTERS: Counter(_comparable(DEAD_LETTERS, row) for row in dead),
    }
    return outputs, {"records_read": len(records), "events_valid": len(events), "duplicates": duplicates}


def _merge_sessions(groups: dict[tuple, list]) -> dict[tuple, list]:
    """Overlapping proto-sessions of a group merged into one window, as ``Sessions.merge`` does."""
    by_group: dict[tuple, list] = {}
    for (group, window), members in groups.items():
        by_group.setdefault(group, []).append((window, members))
    merged: dict[tuple, list] = {}
    for group, windows in by_group.items():
        windows.sort(key=lambda w: w[0].start)
        start, end, members = None, None, []
        for window, events in windows:
            if start is not None and window.start < end:
                end = max(end, window.end)
                members += events
                continue
            if start is not None:
                merged[(group, beam_window.IntervalWindow(start, end))] = members
            start, end, members = window.start, window.end, list(events)
        merged[(group, beam_window.IntervalWindow(start, end))] = members
    return merged


def run_graph(tmp_path: Path, elements: list, config: AnalyticsConfig) -> tuple[dict[str, Counter], dict[str, int]]:
    out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    outputs = p | beam.Create(elements) | StreamingAnalytics(config)
    for tag in (AGGREGATES, DEAD_LETTERS):
        _ = outputs[tag] | f"Write{tag}" >> beam.Map(_append, str(out / f"{tag}.jsonl"))
    result = p.run()
    result.wait_until_finish()
    rows = {
        tag: Counter(_comparable(tag, orjson.loads(line)) for line in (out / f"{tag}.jsonl").read_bytes().splitlines())
        for tag in (AGGREGATES, DEAD_LETTERS)
    }
    return rows, counters(result)


def _append(row: dict, path: str) -> None:
    with open(path, "ab") as out:
        out.write(orjson.dumps(row) + b"\n")


def batches_of(records: list[SourceRecord], size: int) -> list[RecordBatch]:
    return [
        RecordBatch(
            "synthetic", [r.payload for r in records[i : i + size]], [r.metadata for r in records[i : i + size]]
        )
        for i in range(0, len(records), size)
    ]


@pytest.mark.parametrize(
    ("window", "key_field"),
    [
        (WindowSpec("fixed", 60), "page"),
        (WindowSpec("sliding", 120, period_s=30), "properties.country"),
        (WindowSpec("session", gap_s=20), "user_id"),
        (WindowSpec("session", gap_s=600), "page"),  # long sessions: chains across many events and batches
    ],
    ids=["fixed", "sliding", "session", "long-session"],
)
def test_the_graph_equals_the_per_record_reference(tmp_path, window, key_field):
    config = AnalyticsConfig(window=window, key_field=key_field)
    records = synthetic_records()
    expected, expected_counts = reference(records, config)
    for elements in (batches_of(records, 700), batches_of(records, 1), records):
        got, got_counts = run_graph(tmp_path, elements, config)
        assert got == expected
        for name, value in expected_counts.items():
            assert got_counts[name] == value, name
        assert got_counts["dead_letters"] == sum(expected[DEAD_LETTERS].values())
    assert expected_counts["duplicates"] > 0 and expected[DEAD_LETTERS]
