"""File I/O: JSON lines read as raw bytes (one record per line, whatever the bytes), written as one JSON object per
line, and Avro container files end to end."""

from __future__ import annotations

import base64
import glob
import io
import os
import random

import apache_beam as beam
import fastavro
import orjson
import pytest
from apache_beam import coders
from apache_beam.io.range_trackers import OffsetRangeTracker
from apache_beam.io.textio import _TextSource
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

import schemas
import transforms.io.files as files
from pipelines.streaming_analytics import run
from transforms.io.files import ReadJsonLineBatches, WriteJsonLines, read_line_range, split_into_ranges
from transforms.records import SourceRecord


def event_line(event_id: str, seconds: int = 10, **extra) -> bytes:
    event = {
        "event_id": event_id,
        "event_type": "click",
        "user_id": f"user-{event_id}",
        "event_time": f"2024-01-01T00:00:{seconds:02d}Z",
        "page": "/home",
        "value": 1,
    }
    event.update(extra)
    return orjson.dumps(event)


INVALID_UTF8 = b'{"event_id":"\xff\xfe","event_type":"click"}'
LONG = event_line("long", properties={"blob": "x" * 3_000_000})  # ~3 MB, beyond the default 1 MiB limit


def _file_contents() -> tuple[bytes, list[bytes]]:
    """The file's bytes and the payloads the reader must produce, in order."""
    lines = [event_line("a"), INVALID_UTF8, event_line("crlf"), b"", LONG, event_line("last", 20)]
    # CRLF after the third line, LF elsewhere, no newline at the very end.
    data = lines[0] + b"\n" + lines[1] + b"\n" + lines[2] + b"\r\n" + lines[3] + b"\n" + lines[4] + b"\n" + lines[5]
    return data, lines


def test_read_json_lines_yields_exact_bytes_per_line(tmp_path):
    data, lines = _file_contents()
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([])) as p:
        records = (
            p | ReadJsonLineBatches(str(path)) | beam.FlatMap(lambda b: [b.record(i) for i in range(len(b.payloads))])
        )
        assert_that(
            records | beam.Map(lambda r: (type(r).__name__, r.payload, r.source, r.metadata, r.decoded)),
            equal_to([("SourceRecord", line, str(path), None, None) for line in lines]),
        )


def test_read_json_lines_glob_over_several_files(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"1\n2\n")
    (tmp_path / "b.jsonl").write_bytes(b"3")
    (tmp_path / "c.txt").write_bytes(b"not matched")
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([])) as p:
        records = (
            p
            | ReadJsonLineBatches(str(tmp_path / "*.jsonl"))
            | beam.FlatMap(lambda b: [(line, os.path.basename(b.source)) for line in b.payloads])
        )
        assert_that(records, equal_to([(b"1", "a.jsonl"), (b"2", "a.jsonl"), (b"3", "b.jsonl")]))


def _run(tmp_path, source: str, *extra: str):
    return run(
        [
            f"--source={source}",
            f"--sink={tmp_path / 'out' / 'agg'}",
            f"--dead_letter_sink={tmp_path / 'out' / 'dlq'}",
            *extra,
        ]
    )


def test_pipeline_survives_undecodable_lines(tmp_path):
    data, lines = _file_contents()
    path = tmp_path / "events.jsonl"
    path.write_bytes(data)
    summary = _run(tmp_path, str(path))
    assert summary.counters["records_read"] == len(lines)
    codes = sorted((r["error_code"], r["stage"]) for r in summary.dead_letter_rows)
    assert codes == [("invalid_encoding", "parse"), ("malformed_json", "parse"), ("payload_too_large", "parse")]
    by_code = {r["error_code"]: r for r in summary.dead_letter_rows}
    bad = by_code["invalid_encoding"]
    assert base64.b64decode(bad["payload"]) == INVALID_UTF8  # the exact bytes, replayable
    assert bad["source"] == str(path)
    assert base64.b64decode(by_code["malformed_json"]["payload"]) == b""  # the empty line
    assert base64.b64decode(by_code["payload_too_large"]["payload"]) == LONG
    # The valid lines (LF, CRLF and the unterminated last line) are aggregated.
    assert summary.counters["events_valid"] == 3
    assert sum(r["event_count"] for r in summary.aggregate_rows) == 3
    assert summary.conserved()
    # Everything written is one JSON object per line, in files named after the prefixes.
    assert summary.aggregate_files and all(os.path.basename(f).startswith("agg-") for f in summary.aggregate_files)
    assert summary.dead_letter_files and all(os.path.basename(f).startswith("dlq-") for f in summary.dead_letter_files)


def _read_back(prefix: str) -> list[dict]:
    rows = []
    for path in sorted(glob.glob(f"{prefix}*")):
        assert os.path.basename(path).startswith(os.path.basename(prefix))
        with open(path, "rb") as handle:
            data = handle.read()
        assert data.endswith(b"\n")
        for line in data.split(b"\n")[:-1]:
            obj = orjson.loads(line)  # every line is one complete JSON object
            assert isinstance(obj, dict)
            rows.append(obj)
    return rows


ROWS = [
    {"id": 1, "text": "plain"},
    {"id": 2, "text": "ünïcödé ✓ 𝄞", "nested": {"a": [1, 2.5, None]}},
    {"id": 3, "text": 'line\nbreak and "quotes"', "flag": True, "none": None},
    *({"id": i, "text": "bulk"} for i in range(4, 500)),
]


def _write(prefix: str, rows: list[dict]) -> None:
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([])) as p:
        _ = p | beam.Create(rows) | WriteJsonLines(prefix)


def test_write_json_lines_one_object_per_line(tmp_path):
    prefix = str(tmp_path / "nested" / "dir" / "rows")
    _write(prefix, ROWS)
    back = _read_back(prefix)
    assert sorted(back, key=lambda r: r["id"]) == ROWS


def test_write_json_lines_after_previous_files_were_removed(tmp_path):
    # The CLI removes a previous run's files before writing again to the same prefix (in the same process).
    prefix = str(tmp_path / "rows")
    _write(prefix, ROWS[:2])
    for path in glob.glob(f"{prefix}-*"):
        os.remove(path)
    _write(prefix, ROWS[2:4])
    assert sorted(r["id"] for r in _read_back(prefix)) == [3, 4]


def container(records: list[dict]) -> bytes:
    out = io.BytesIO()
    full = [{"page": None, "value": None, "properties": None, **r} for r in records]
    fastavro.writer(out, schemas.event_avro_schema(), full)
    return out.getvalue()


def test_avro_container_end_to_end(tmp_path):
    records = [
        {"event_id": "a", "event_type": "click", "user_id": "u1", "event_time": "2024-01-01T00:00:10Z", "value": 2},
        {"event_id": "b", "event_type": "click", "user_id": "u2", "event_time": 1704067220000, "value": 0.5},
        {"event_id": "c", "event_type": "view", "user_id": "u1", "event_time": "2024-01-01T00:01:05Z", "page": "/x"},
        {"event_id": "a", "event_type": "click", "user_id": "u1", "event_time": "2024-01-01T00:00:10Z", "value": 2},
        {"event_id": "d", "event_type": "Bad Type", "user_id": "u3", "event_time": "2024-01-01T00:00:30Z"},
        {
            "event_id": "e",
            "event_type": "click",
            "user_id": "u4",
            "event_time": "2024-01-01T00:00:40Z",
            "properties": {"country": "de"},
        },
    ]
    path = tmp_path / "events.avro"
    path.write_bytes(container(records))
    summary = _run(tmp_path, str(path), "--format=avro", "--key_field=page")
    assert summary.counters["records_read"] == 6
    assert summary.counters["events_valid"] == 5
    assert summary.counters["duplicates"] == 1
    assert [(r["error_code"], r["error_field"], r["source"]) for r in summary.dead_letter_rows] == [
        ("invalid_value", "event_type", str(path))
    ]
    rows = {(r["window_start"], r["event_type"], r["key"]): r for r in summary.aggregate_rows}
    assert set(rows) == {("2024-01-01T00:00:00Z", "click", None), ("2024-01-01T00:01:00Z", "view", "/x")}
    click = rows[("2024-01-01T00:00:00Z", "click", None)]
    assert (click["event_count"], click["value_sum"], click["distinct_users"]) == (3, 2.5, 3)
    view = rows[("2024-01-01T00:01:00Z", "view", "/x")]
    assert (view["event_count"], view["value_sum"], view["distinct_users"]) == (1, 0.0, 1)
    # The dead letter keeps the record's schemaless Avro bytes: they decode back to the record.
    payload = base64.b64decode(summary.dead_letter_rows[0]["payload"])
    decoded = fastavro.schemaless_reader(io.BytesIO(payload), schemas.event_avro_schema(), None)
    assert decoded["event_type"] == "Bad Type"
    assert summary.conserved()


def test_source_record_defaults():
    record = SourceRecord(b"x", "f")
    assert (record.metadata, record.decoded) == (None, None)


# --- byte ranges read exactly what Beam's text source reads ---------------------------------------------------


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
