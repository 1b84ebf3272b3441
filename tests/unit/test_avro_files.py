"""Avro container files end to end: records become events or dead letters; a corrupt file is one dead letter."""

from __future__ import annotations

import base64
import io

import fastavro

import schemas
from pipelines.streaming_analytics import run
from transforms.io.files import read_avro_container

RECORDS = [
    {"event_id": "a", "event_type": "click", "user_id": "u1", "event_time": "2024-01-01T00:00:10Z", "value": 2},
    {"event_id": "b", "event_type": "click", "user_id": "u2", "event_time": 1704067220000, "page": "/p"},
    {"event_id": "", "event_type": "click", "user_id": "u3", "event_time": "2024-01-01T00:00:30Z"},  # bad id
]


def container(records: list[dict]) -> bytes:
    out = io.BytesIO()
    full = [{"page": None, "value": None, "properties": None, **r} for r in records]
    fastavro.writer(out, schemas.event_avro_schema(), full)
    return out.getvalue()


def test_container_records_and_payloads_round_trip():
    records = list(read_avro_container("f.avro", container(RECORDS)))
    assert [r.metadata["record"] for r in records] == [0, 1, 2]
    decoded = fastavro.schemaless_reader(io.BytesIO(records[0].payload), schemas.event_avro_schema(), None)
    assert decoded["event_id"] == "a"


def test_corrupt_container_is_one_malformed_avro_record():
    records = list(read_avro_container("bad.avro", b"Obj\x01garbage" * 10))
    assert len(records) == 1 and records[0].decoded.code == "malformed_avro"


def test_avro_files_through_the_cli(tmp_path):
    (tmp_path / "a.avro").write_bytes(container(RECORDS))
    (tmp_path / "b.avro").write_bytes(b"not an avro file at all")
    summary = run(
        [
            "--format=avro",
            f"--source={tmp_path / '*.avro'}",
            f"--sink={tmp_path / 'out' / 'agg'}",
            f"--dead_letter_sink={tmp_path / 'out' / 'dlq'}",
        ]
    )
    assert summary.counters["records_read"] == 4
    assert sorted((r["error_code"], r["stage"]) for r in summary.dead_letter_rows) == [
        ("invalid_value", "validate"),
        ("malformed_avro", "parse"),
    ]
    invalid = next(r for r in summary.dead_letter_rows if r["error_code"] == "invalid_value")
    assert invalid["error_field"] == "event_id" and base64.b64decode(invalid["payload"])
    assert sum(r["event_count"] for r in summary.aggregate_rows) == 2
    assert summary.conserved()
