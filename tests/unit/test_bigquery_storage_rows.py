"""Storage Write API rows without a server: the protocol buffer descriptor made from schemas/*.bq.json, and the
conversion of the pipeline's JSON-ready rows (RFC 3339 timestamps, base64 bytes, JSON values) into it."""

from __future__ import annotations

import base64
import pickle

import orjson
import pytest
from apache_beam.internal import pickler
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from schemas import AGGREGATES_TABLE, DEAD_LETTER_TABLE, bigquery_field_names
from transforms.io.bigquery import to_insert_row
from transforms.io.bigquery_storage import (
    MAX_REQUEST_BYTES,
    RowConversionError,
    RowEncoder,
    StorageWriter,
    proto_descriptor,
)

F = descriptor_pb2.FieldDescriptorProto

AGGREGATE = {
    "window_start": "2024-01-01T00:00:00Z",
    "window_end": "2024-01-01T00:01:00Z",
    "event_type": "click",
    "key": None,
    "event_count": 3,
    "value_sum": 7.5,
    "distinct_users": 2,
    "distinct_users_sketch": base64.b64encode(b"\x08\x70\x10\x01").decode(),
    "pane_timing": "ON_TIME",
    "pane_index": 0,
    "is_last_pane": True,
    "emitted_at": "2024-01-01T00:01:02.123456Z",
}
DEAD_LETTER = {
    "error_code": "malformed_json",
    "error_field": None,
    "error_message": "bad",
    "payload": base64.b64encode(b"\xff\x00{").decode(),
    "source": "kafka://127.0.0.1:9092/events",
    "source_metadata": {"partition": 0, "offset": 7, "key": "ключ", "attributes": {"a": [1, None, True]}},
    "stage": "parse",
    "failed_at": "2024-01-01T00:00:00.5+02:00",
}


def _decode(table_kind: str, data: bytes):
    file = descriptor_pb2.FileDescriptorProto(name="check.proto", package="check")
    file.message_type.add().CopyFrom(proto_descriptor(table_kind))
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("check.Row")).FromString(data)


@pytest.mark.parametrize("table_kind", [AGGREGATES_TABLE, DEAD_LETTER_TABLE])
def test_descriptor_follows_the_schema_file(table_kind):
    descriptor = proto_descriptor(table_kind)
    assert [f.name for f in descriptor.field] == list(bigquery_field_names(table_kind))
    assert [f.number for f in descriptor.field] == list(range(1, len(descriptor.field) + 1))
    # All optional, REQUIRED columns too: BigQuery, not the protobuf library, refuses a row without one.
    assert {f.label for f in descriptor.field} == {F.LABEL_OPTIONAL}


def test_types_map_to_the_write_api_conversions():
    types = {f.name: f.type for f in proto_descriptor(AGGREGATES_TABLE).field}
    assert types["window_start"] == F.TYPE_INT64  # TIMESTAMP: microseconds since the epoch
    assert types["event_count"] == F.TYPE_INT64
    assert types["value_sum"] == F.TYPE_DOUBLE
    assert types["distinct_users_sketch"] == F.TYPE_BYTES
    assert types["is_last_pane"] == F.TYPE_BOOL
    assert {f.name: f.type for f in proto_descriptor(DEAD_LETTER_TABLE).field}["source_metadata"] == F.TYPE_STRING


def test_aggregate_row_round_trip():
    message = _decode(AGGREGATES_TABLE, RowEncoder(AGGREGATES_TABLE).encode(AGGREGATE))
    assert message.window_start == 1704067200 * 1_000_000
    assert message.emitted_at == (1704067262 * 1_000_000) + 123456
    assert message.distinct_users_sketch == b"\x08\x70\x10\x01"
    assert (message.event_type, message.event_count, message.value_sum) == ("click", 3, 7.5)
    assert message.is_last_pane is True and message.pane_index == 0
    assert not message.HasField("key")  # null stays null (absent), not ""
    assert message.HasField("pane_index")  # a zero is written, not dropped


def test_dead_letter_row_round_trip_with_a_json_column():
    message = _decode(DEAD_LETTER_TABLE, RowEncoder(DEAD_LETTER_TABLE).encode(DEAD_LETTER))
    assert message.payload == b"\xff\x00{"
    assert message.failed_at == (1704067200 - 2 * 3600) * 1_000_000 + 500_000  # the +02:00 offset is applied
    assert orjson.loads(message.source_metadata) == DEAD_LETTER["source_metadata"]
    # The same JSON text the streaming-insert path sends.
    assert message.source_metadata == to_insert_row(DEAD_LETTER, ("source_metadata",))["source_metadata"]
    assert not message.HasField("error_field")


@pytest.mark.parametrize(
    ("change", "column", "words"),
    [
        ({"event_count": "3"}, "event_count", "not an integer"),
        ({"event_count": True}, "event_count", "not an integer"),
        ({"event_count": 1 << 63}, "event_count", "cannot convert"),
        ({"value_sum": "1.5"}, "value_sum", "not a number"),
        ({"is_last_pane": 1}, "is_last_pane", "not a boolean"),
        ({"window_start": "2024-01-01 00:00:00"}, "window_start", "RFC 3339"),
        ({"window_start": 1704067200}, "window_start", "RFC 3339"),
        ({"distinct_users_sketch": "not base64!"}, "distinct_users_sketch", "cannot convert"),
        ({"event_type": 5}, "event_type", "not a string"),
        ({"extra": 1}, "extra", "no such field: extra."),
    ],
)
def test_rows_that_do_not_fit_name_the_column(change, column, words):
    with pytest.raises(RowConversionError) as raised:
        RowEncoder(AGGREGATES_TABLE).encode({**AGGREGATE, **change})
    assert raised.value.column == column and words in str(raised.value)


def test_missing_required_values_are_left_to_bigquery():
    row = {k: v for k, v in AGGREGATE.items() if k != "event_type"}
    assert not _decode(AGGREGATES_TABLE, RowEncoder(AGGREGATES_TABLE).encode(row)).HasField("event_type")


def test_writer_pickles_without_a_client_and_knows_its_stream_names():
    writer = StorageWriter("local-project", "ds", "aggregates", AGGREGATES_TABLE, "127.0.0.1:19060", exactly_once=True)
    for dumps, loads in ((pickle.dumps, pickle.loads), (pickler.dumps, pickler.loads)):
        copy = loads(dumps(writer))
        assert copy.table == "projects/local-project/datasets/ds/tables/aggregates"
        assert copy.default_stream == "projects/local-project/datasets/ds/tables/aggregates/streams/_default"
        assert copy.exactly_once and copy._client is None
    assert MAX_REQUEST_BYTES == 10 * 1024 * 1024  # BigQuery's AppendRows request limit
