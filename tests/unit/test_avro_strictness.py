"""Avro bytes that fastavro decodes but the specification forbids are malformed_avro; valid non-canonical ones are not.

The payloads are written by hand (zig-zag varints, length-prefixed strings) so that each case says exactly which
bytes break or bend the encoding. Schema: schemas/event.avsc, fields in order event_id, event_type, user_id,
event_time [string, long], page [null, string], value [null, long, double], properties [null, map<string>].
"""

from __future__ import annotations

import copy
import io
import json
import struct
from importlib import resources
from typing import Any

import fastavro
import pytest

from transforms import dead_letter as dl
from transforms.avro_scan import first_violation
from transforms.dead_letter import Rejection
from transforms.parse import avro_decoder, decode_avro
from transforms.records import Event, SourceRecord
from transforms.validate import EventValidator

NOW_US = 1_700_000_000_000_000
RAW_SCHEMA: dict[str, Any] = json.loads(resources.files("schemas").joinpath("event.avsc").read_text(encoding="utf-8"))


def varint(n: int) -> bytes:
    """Minimal zig-zag varint of a long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def text(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return varint(len(raw)) + raw


HEAD = text("e-1") + text("click") + text("u-1") + varint(0) + text("2023-11-14T22:00:00Z")
NULL = varint(0)


def event(page: bytes = NULL, value: bytes = NULL, properties: bytes = NULL, head: bytes = HEAD) -> bytes:
    return head + page + value + properties


def run(payload: bytes, decode=decode_avro) -> Event | Rejection:
    decoded = decode(payload)
    if type(decoded) is Rejection:
        return decoded
    return EventValidator(clock=lambda: NOW_US).validate(decoded, SourceRecord(payload, "avro-test", {}))


def assert_malformed(result: Event | Rejection, *words: str) -> None:
    assert type(result) is Rejection, f"expected malformed_avro, got {result!r}"[:300]
    assert (result.code, result.field) == (dl.MALFORMED_AVRO, None)
    for word in words:
        assert word in result.message, result.message


def test_hand_written_base_event_is_valid() -> None:
    result = run(event())
    assert type(result) is Event and (result.event_id, result.page, result.value) == ("e-1", None, 0)


@pytest.mark.parametrize(
    ("case", "payload", "where", "index"),
    [
        (
            "event_time -1 reads as long",
            event(head=HEAD[: -len(text("2023-11-14T22:00:00Z")) - 1] + varint(-1) + varint(1_700_000_000_000)),
            "event_time",
            -1,
        ),
        ("page -1 reads as string", event(page=varint(-1) + text("/x")), "page", -1),
        ("page -2 reads as null", event(page=varint(-2)), "page", -2),
        ("value -1 reads as double", event(value=varint(-1) + struct.pack("<d", 2.5)), "value", -1),
        ("value -2 reads as long", event(value=varint(-2) + varint(7)), "value", -2),
        (
            "properties -1 reads as map",
            event(properties=varint(-1) + varint(1) + text("k") + text("v") + varint(0)),
            "properties",
            -1,
        ),
        ("page index past the last branch", event(page=varint(2) + text("/x")), "page", 2),
    ],
    ids=lambda v: v if isinstance(v, str) and " " in v else "",
)
def test_union_branch_index_outside_the_union_is_malformed(case: str, payload: bytes, where: str, index: int) -> None:
    assert_malformed(run(payload), where, f"union branch index {index}")


def test_map_in_several_blocks_is_valid() -> None:
    blocks = varint(1) + text("a") + text("1") + varint(1) + text("b") + text("2") + varint(0)
    result = run(event(properties=varint(1) + blocks))
    assert type(result) is Event and result.properties == {"a": "1", "b": "2"}


def test_map_block_with_negative_count_and_byte_size_is_valid() -> None:
    entries = text("a") + text("1") + text("b") + text("2")
    block = varint(-2) + varint(len(entries)) + entries + varint(0)
    result = run(event(properties=varint(1) + block))
    assert type(result) is Event and result.properties == {"a": "1", "b": "2"}


def test_non_minimal_varint_is_valid() -> None:
    padded_seven = bytes([0x8E, 0x80, 0x80, 0x00])  # zig-zag 14 = 7, with three redundant continuation bytes
    result = run(event(value=varint(1) + padded_seven))
    assert type(result) is Event and result.value == 7


def test_varint_longer_than_a_long_is_malformed() -> None:
    eleven_bytes = bytes([0x80] * 10 + [0x00])
    assert_malformed(run(event(value=varint(1) + eleven_bytes)), "value", "longer than 10 bytes")


def test_negative_map_block_size_is_malformed() -> None:
    block = varint(-1) + varint(-5) + text("a") + text("1") + varint(0)
    assert_malformed(run(event(properties=varint(1) + block)), "properties", "negative block size")


def _writer_with(field: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(RAW_SCHEMA)
    schema["fields"].insert(3, field)  # after user_id
    return fastavro.parse_schema(schema)


def test_evolved_writer_negative_union_index_is_malformed() -> None:
    writer = _writer_with({"name": "session_id", "type": ["null", "string"], "default": None})
    head = (
        text("e-1") + text("click") + text("u-1") + varint(1) + text("s-1") + varint(0) + text("2023-11-14T22:00:00Z")
    )
    assert type(run(event(head=head), avro_decoder(writer))) is Event
    assert_malformed(run(event(head=head, page=varint(-1) + text("/x")), avro_decoder(writer)), "page")


def test_writer_only_field_is_checked_too() -> None:
    writer = _writer_with(
        {"name": "tier", "type": {"type": "enum", "name": "Tier", "symbols": ["a", "b"]}, "default": "a"}
    )
    head = text("e-1") + text("click") + text("u-1") + varint(5) + varint(0) + text("2023-11-14T22:00:00Z")
    assert_malformed(run(event(head=head), avro_decoder(writer)), "tier", "enum index 5")
    session = _writer_with({"name": "session_id", "type": ["null", "string"], "default": None})
    head = (
        text("e-1")
        + text("click")
        + text("u-1")
        + varint(1)
        + text(b"s\xff")
        + varint(0)
        + text("2023-11-14T22:00:00Z")
    )
    result = run(event(head=head), avro_decoder(session))
    assert type(result) is Rejection and (result.code, result.field) == (dl.INVALID_ENCODING, None)


def test_first_violation_accepts_what_fastavro_writes() -> None:
    writer = fastavro.parse_schema(RAW_SCHEMA)
    for record in (
        {"page": "/p", "value": 3, "properties": {"k": "v"}},
        {"page": None, "value": 2.5, "properties": None},
        {"event_time": 1_700_000_000_000, "page": None, "value": None, "properties": {}},
    ):
        out = io.BytesIO()
        fastavro.schemaless_writer(
            out,
            writer,
            {"event_id": "e", "event_type": "t", "user_id": "u", "event_time": "2023-11-14T22:00:00Z", **record},
        )
        assert first_violation(out.getvalue(), writer) is None


def test_long_valid_string_in_a_writer_only_field_is_valid() -> None:
    session = _writer_with({"name": "session_id", "type": ["null", "string"], "default": None})
    long_id = "s" * 300  # a two-byte length prefix
    head = (
        text("e-1") + text("click") + text("u-1") + varint(1) + text(long_id) + varint(0) + text("2023-11-14T22:00:00Z")
    )
    assert type(run(event(head=head), avro_decoder(session))) is Event
