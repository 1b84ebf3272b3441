"""Kafka (a real broker) -> Prism: a poison record never blocks its partition, and records written with the newer
schema id 2 (an added optional field) are read past it.

One partition, Confluent Avro: events with schema id 1 and id 2 before and after a record that makes
AssignEventTime throw (injected in this process: Prism runs the Python steps here, LOOPBACK). The events after
the poison record, on the same partition, must be aggregated exactly; the poison record is one dead letter.
"""

from __future__ import annotations

import base64
import io
import time
import uuid

import fastavro
import pytest

import schemas
from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from pipelines.summary import read_rows
from tests.integration.event_mix import MINUTE_US, event_fields, produce
from tests.integration.fault_report import FaultReport
from tests.integration.results import final_counts
from tests.integration.test_kafka_e2e import DEADLINE_S, topics  # noqa: F401
from tests.streaming.test_poison_records import poisoned
from transforms import event_time
from transforms.timefmt import format_rfc3339_us, now_us

pytestmark = pytest.mark.integration


def _framed(fields: dict, schema_id: int) -> bytes:
    body = io.BytesIO()
    record = {"properties": None, **fields, **({"session_id": f"s-{fields['event_id']}"} if schema_id == 2 else {})}
    fastavro.schemaless_writer(body, schemas.confluent_schemas()[schema_id], record)
    return b"\x00" + schema_id.to_bytes(4, "big") + body.getvalue()


def test_poison_record_does_not_block_the_partition_and_schema_id_2_parses(topics, tmp_path, monkeypatch):  # noqa: F811
    bootstrap, names = topics
    monkeypatch.setattr(
        event_time, "rows_of", poisoned(event_time.rows_of, lambda _b, valid, *_: any(v[1] == "poison" for v in valid))
    )
    window = (now_us() // MINUTE_US - 4) * MINUTE_US
    before = [_framed(event_fields(f"b{i}", window + i * 1_000_000, f"u{i % 3}", i), 1 + i % 2) for i in range(10)]
    poison = _framed(event_fields("poison", window + 30_000_000, "u0", 100), 2)
    after = [
        _framed(event_fields(f"a{i}", window + (40 + i) * 1_000_000, f"u{i % 3}", i), 1 + i % 2) for i in range(10)
    ]
    delivered = produce(bootstrap, names["events"], [*before, poison, *after])
    source = f"kafka://{bootstrap}/{names['events']}"
    spec = resolve(
        [
            f"--source={source}",
            "--format=confluent-avro",
            f"--sink={tmp_path / 'aggregates'}",
            f"--dead_letter_sink={tmp_path / 'dead_letter'}",
            f"--kafka_consumer_group=test-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--early_firing=2",
            "--runner=PrismRunner",
            "--streaming",
        ]
    )
    expected = {(format_rfc3339_us(window), "click", "/home"): (20, float(2 * sum(range(10))), 3)}
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    finals, dead = {}, []
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            finals = final_counts(read_rows(str(tmp_path / "aggregates"))[1])
            dead = read_rows(str(tmp_path / "dead_letter"))[1]
            if finals == expected and dead:
                break
            time.sleep(0.5)
    finally:
        result.cancel()

    FaultReport(
        test="Kafka poison record",
        load="21 records on one partition (schema ids 1 and 2), the poison one in the middle",
        fault="one record makes AssignEventTime throw",
        records_in=21,
        records_out=sum(count for count, _, _ in finals.values()),
        dead_lettered=len(dead),
        duplicates=0,
        detail=f"the 10 records after it (offsets {delivered[after[0]][1]}-{delivered[after[-1]][1]}) aggregated",
    ).emit()
    assert finals == expected  # the 10 records after the poison one, on the same partition, are counted
    assert len(dead) == 1
    (row,) = dead
    assert (row["error_code"], row["stage"]) == ("processing_error", "event_time")
    assert base64.b64decode(row["payload"]) == poison
    assert (row["source_metadata"]["partition"], row["source_metadata"]["offset"]) == delivered[poison]
