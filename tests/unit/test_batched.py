"""Bounded input in batches (transforms/batched.py) gives exactly what record-by-record processing gives.

Reading: the batched line reader yields Beam's text-source lines for any file and any split. Dedup: one rule,
whatever order the copies come in. The whole graph: batched == record by record (the streaming graph's steps) for
every window kind and a key field from the properties: the same rows, dead letters and counters.
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from fractions import Fraction
from pathlib import Path

import apache_beam as beam
import orjson
import pytest
from apache_beam import coders
from apache_beam.io.range_trackers import OffsetRangeTracker
from apache_beam.io.textio import _TextSource
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import transforms.io.files as files
from pipelines.summary import counters
from transforms.aggregate import Accumulator, exact_partials
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.batched import DEDUP_SHARDS, pack_rows, shard_of, unpack_rows
from transforms.dedup import keep_first_per_horizon
from transforms.io.files import read_line_range, split_into_ranges
from transforms.io.synthetic import generate, parse_synthetic_uri
from transforms.records import Event, RecordBatch
from transforms.windowing import WindowSpec

S = 1_000_000


def beam_text_lines(path: str, start: int, end: int) -> list[bytes]:
    source = _TextSource(path, 0, "auto", True, coders.BytesCoder(), validate=False)
    return list(source.read_records(path, OffsetRangeTracker(start, end)))


@pytest.mark.parametrize("seed", range(6))
def test_line_ranges_read_what_beams_text_source_reads(tmp_path, seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(files, "_READ_BLOCK", rng.choice([1, 2, 3, 7, 1 << 20]))
    for trial in range(40):
        parts = []
        for _ in range(rng.randrange(0, 25)):
            parts.append(bytes(rng.choice(b"ab\r{}") for _ in range(rng.randrange(0, 10))))
            parts.append(rng.choice([b"\n", b"\r\n", b"\n", b"\r"]))
        if parts and rng.random() < 0.5:
            parts.pop()  # an unterminated last line
        data = b"".join(parts)
        path = tmp_path / f"f{trial}.jsonl"
        path.write_bytes(data)
        for range_bytes in (1, 2, 5, 64):
            ours, theirs = [], []
            for _, start, end in split_into_ranges(str(path), len(data), range_bytes):
                ours += [line for batch in read_line_range(str(path), start, end, batch_lines=3) for line in batch]
                theirs += beam_text_lines(str(path), start, end)
            assert ours == theirs, (data, range_bytes)


def test_compressed_files_are_one_range(tmp_path):
    import gzip

    path = tmp_path / "events.jsonl.gz"
    path.write_bytes(gzip.compress(b"a\nb\r\n\nc"))
    assert list(split_into_ranges(str(path), 100)) == [(str(path), 0, -1)]
    assert [line for batch in read_line_range(str(path), 0, -1) for line in batch] == [b"a", b"b", b"", b"c"]


# --- dedup -----------------------------------------------------------------------------------------------------


def row(event_id: str, seconds: float, user: str = "u", value: int | float = 1, key: str | None = None):
    return (event_id, int(seconds * S), "click", key, user, value)


def test_keep_first_rule_and_count():
    rows = [
        row("a", 0),
        row("a", 5),  # within the horizon: dropped
        row("a", 600),  # exactly the horizon after the first: dropped
        row("b", 0),
        row("c", 100),
        row("c", 701),  # beyond the horizon of the first (kept), and so the new first
        row("c", 1000),  # within the horizon of 701: dropped
        row("c", 1400),  # 699 s after 701: kept
    ]
    kept, dropped = keep_first_per_horizon(rows, 600 * S)
    assert [(r[0], r[1] // S) for r in kept] == [("a", 0), ("b", 0), ("c", 100), ("c", 701), ("c", 1400)]
    assert dropped == 3


def test_keep_first_does_not_depend_on_order():
    rows = [row("x", 50, "late"), row("x", 10, "early"), row("x", 30, "mid"), row("x", 10, "tie", 2), row("y", 1)]
    results = {tuple(sorted(keep_first_per_horizon(list(p), 600 * S)[0])) for p in itertools.permutations(rows)}
    assert results == {(row("x", 10, "early"), row("y", 1))}  # ties broken by what the aggregates see


def test_shards_are_stable_and_rows_round_trip():
    assert [shard_of(i) for i in ("e-1", "e-2", "é", "😀")] == [shard_of(i) for i in ("e-1", "e-2", "é", "😀")]
    assert all(0 <= shard_of(f"id-{n}") < DEDUP_SHARDS for n in range(100))
    assert len({shard_of(f"id-{n}") for n in range(1000)}) == DEDUP_SHARDS
    rows = [row("a", 1, value=-0.0), row("b", 2, value=2**63 - 1, key="k"), row("c", 3, value=1.5)]
    assert [tuple(r) for r in unpack_rows(pack_rows(rows))] == rows
    big = [*rows, row("d", 4, value=10**300)]  # beyond msgpack's 64 bits: still exact
    assert [tuple(r) for r in unpack_rows(pack_rows(big))] == big
    assert type(unpack_rows(pack_rows(rows))[0][5]) is float


# --- the whole graph: batched == record by record ------------------------------------------------------------


MIX = "events=2500&rate=2&keys=6&users=80&event_types=3&bad=0.05&duplicates=0.05&late=0.05&seed=5"


def run_graph(tmp_path: Path, config: AnalyticsConfig, name: str):
    spec = parse_synthetic_uri(f"synthetic://?{MIX}")
    generated = list(generate(spec))
    batches = [
        RecordBatch("synthetic", [p for _, _, p in chunk], [{"sequence": s} for s, _, _ in chunk])
        for chunk in (generated[i : i + 700] for i in range(0, len(generated), 700))
    ]
    out = tmp_path / name
    out.mkdir()
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    outputs = p | beam.Create(batches) | StreamingAnalytics(config)
    for tag in (AGGREGATES, DEAD_LETTERS):
        _ = outputs[tag] | f"Write{tag}" >> beam.Map(_append, str(out / f"{tag}.jsonl"))
    result = p.run()
    result.wait_until_finish()
    drop = {AGGREGATES: "emitted_at", DEAD_LETTERS: "failed_at"}
    rows = {
        tag: Counter(
            orjson.dumps({k: v for k, v in orjson.loads(line).items() if k != drop[tag]}, option=orjson.OPT_SORT_KEYS)
            for line in (out / f"{tag}.jsonl").read_bytes().splitlines()
        )
        for tag in (AGGREGATES, DEAD_LETTERS)
    }
    return rows, counters(result)


def _append(row: dict, path: str) -> None:
    with open(path, "ab") as out:
        out.write(orjson.dumps(row) + b"\n")


@pytest.mark.parametrize(
    ("window", "key_field"),
    [
        (WindowSpec("fixed", 60), "page"),
        (WindowSpec("sliding", 120, period_s=30), "properties.country"),
        (WindowSpec("session", gap_s=20), "user_id"),
    ],
    ids=["fixed", "sliding", "session"],
)
def test_batched_graph_equals_record_by_record(tmp_path, window, key_field):
    config = AnalyticsConfig(window=window, key_field=key_field)
    batched, batched_counters = run_graph(tmp_path, config, "batched")
    single, single_counters = run_graph(
        tmp_path, AnalyticsConfig(window=window, key_field=key_field, batched=False), "one"
    )
    assert batched == single
    assert batched_counters == single_counters
    assert batched_counters["duplicates"] > 0 and batched_counters["dead_letters"] > 0


# --- pre-aggregation ------------------------------------------------------------------------------------------

FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([5e-324, -5e-324, 1.7976931348623157e308])


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(FLOATS, max_size=30))
def test_exact_partials_sum_exactly(values):
    parts = exact_partials(values)
    if parts is not None:
        assert sum(map(Fraction, parts)) == sum(map(Fraction, values))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.integers(0, 30) | FLOATS, st.sampled_from(["u1", "u2", "u3", "é"])), max_size=40))
def test_add_rows_is_adding_one_by_one(values):
    rows = [("e", 0, "click", None, user, value) for value, user in values]
    one_by_one, at_once = Accumulator(), Accumulator()
    for event_id, when, event_type, key, user, value in rows:
        one_by_one.add(Event(event_id, event_type, user, when, None, value, None, key, b"", "s", None, 0))
    at_once.add_rows(rows)
    assert at_once.count == one_by_one.count
    assert at_once.value_sum() == one_by_one.value_sum()  # exact, or the same infinity beyond the double range
    assert at_once.sketch.to_bytes() == one_by_one.sketch.to_bytes()


def test_bounded_input_workers_collect_garbage_less_often_and_never_more_often():
    import gc

    from transforms.batched import GC_THRESHOLDS, relax_gc_for_bounded_input

    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        relax_gc_for_bounded_input()
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.set_threshold(10 * GC_THRESHOLDS[0], 5, 1000)  # an operator's higher setting stays as it is
        relax_gc_for_bounded_input()
        assert gc.get_threshold() == (10 * GC_THRESHOLDS[0], 5, 1000)
    finally:
        gc.set_threshold(*saved)
