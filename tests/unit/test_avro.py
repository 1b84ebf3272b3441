"""Event contract v1 for Avro input: schemaless binary of schemas/event.avsc, writer-schema evolution, container files.

Avro's schema makes missing fields and wrong JSON types inexpressible, so the field faults here are the content
ones (lengths, patterns, timestamps, non-finite doubles); the payload-level faults are truncation, trailing
bytes, garbage and invalid UTF-8 inside a string.
"""

from __future__ import annotations

import copy
import io
import json
from importlib import resources
from typing import Any

import fastavro
import pytest

import schemas
from transforms import dead_letter as dl
from transforms.dead_letter import Rejection
from transforms.io.files import read_avro_container
from transforms.parse import avro_decoder, decode_avro, decoder_for, parse_record
from transforms.records import Event, SourceRecord
from transforms.validate import EventValidator

NOW_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z
UPPER_MS = (NOW_US + 86_400 * 1_000_000) // 1000
MIN_MS = 946_684_800_000
SCHEMA = schemas.event_avro_schema()
RAW_SCHEMA: dict[str, Any] = json.loads(resources.files("schemas").joinpath("event.avsc").read_text(encoding="utf-8"))

BASE: dict[str, Any] = {
    "event_id": "e-1",
    "event_type": "click",
    "user_id": "u-1",
    "event_time": "2023-11-14T22:00:00Z",
    "page": None,
    "value": None,
    "properties": None,
}


def avro(schema: Any = SCHEMA, **changes: Any) -> bytes:
    """Schemaless Avro of the base event with ``changes``, written with ``schema``."""
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schema, {**BASE, **changes})
    return out.getvalue()


def run(payload: bytes, decode=decode_avro, max_payload_bytes: int = 1 << 20) -> Event | Rejection:
    rec = SourceRecord(payload, "avro-test", {"partition": 0})
    decoded = parse_record(rec, decode, max_payload_bytes)
    if type(decoded) is Rejection:
        return decoded
    return EventValidator(clock=lambda: NOW_US).validate(decoded, rec)


def assert_rejected(result: Event | Rejection, code: str, field: str | None) -> None:
    assert type(result) is Rejection, f"expected {code}/{field}, got {result!r}"[:400]
    assert (result.code, result.field) == (code, field), result.message
    assert result.message


def splice(payload: bytes, marker: bytes, replacement: bytes) -> bytes:
    """Replaces the single occurrence of ``marker`` (same length: Avro lengths stay right)."""
    assert payload.count(marker) == 1 and len(marker) == len(replacement)
    return payload.replace(marker, replacement)


def evolved(*, insert_after: str, field: dict[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(RAW_SCHEMA)
    names = [f["name"] for f in schema["fields"]]
    schema["fields"].insert(names.index(insert_after) + 1, field)
    return schema


def without(*names: str) -> dict[str, Any]:
    schema = copy.deepcopy(RAW_SCHEMA)
    schema["fields"] = [f for f in schema["fields"] if f["name"] not in names]
    return schema


# ---------------------------------------------------------------------------------------------------------------
# Valid records
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        pytest.param({}, {}, id="minimal-all-optionals-null"),
        pytest.param({"event_time": 1_700_000_000_000}, {"event_time_us": NOW_US}, id="event_time-long-ms"),
        pytest.param({"event_time": MIN_MS}, {"event_time_us": MIN_MS * 1000}, id="event_time-long-min-inclusive"),
        pytest.param({"event_time": UPPER_MS}, {"event_time_us": UPPER_MS * 1000}, id="event_time-long-skew-inclusive"),
        pytest.param({"event_time": "2000-01-01T00:00:00Z"}, {"event_time_us": MIN_MS * 1000}, id="event_time-rfc-min"),
        pytest.param(
            {"event_time": "2023-11-15T03:43:20.123456789+05:30"},
            {"event_time_us": NOW_US + 123_456},
            id="event_time-rfc-offset-nanos",
        ),
        pytest.param({"page": "/home"}, {"page": "/home", "key": "/home"}, id="page"),
        pytest.param({"page": ""}, {"page": "", "key": ""}, id="page-empty"),
        pytest.param({"page": "p" * 2048}, {"page": "p" * 2048, "key": "p" * 2048}, id="page-2048"),
        pytest.param({"value": 7}, {"value": 7}, id="value-long"),
        pytest.param({"value": -(2**63)}, {"value": -(2**63)}, id="value-long-min"),
        pytest.param({"value": 2.5}, {"value": 2.5}, id="value-double"),
        pytest.param({"value": 3.0}, {"value": 3.0}, id="value-integral-double-stays-float"),
        pytest.param({"value": 1.7976931348623157e308}, {"value": 1.7976931348623157e308}, id="value-max-double"),
        pytest.param({"properties": {}}, {"properties": {}}, id="properties-empty-map"),
        pytest.param(
            {"properties": {"a": "1", "ключ": "😀"}}, {"properties": {"a": "1", "ключ": "😀"}}, id="properties"
        ),
        pytest.param(
            {"event_id": "e" * 128, "user_id": "u" * 256},
            {"event_id": "e" * 128, "user_id": "u" * 256},
            id="id-length-maxima",
        ),
        pytest.param({"event_type": "a" * 64}, {"event_type": "a" * 64}, id="event_type-64"),
        pytest.param({"event_id": "😀" * 128}, {"event_id": "😀" * 128}, id="event_id-128-astral-code-points"),
    ],
)
def test_valid_avro_records(changes: dict[str, Any], expected: dict[str, Any]) -> None:
    payload = avro(**changes)
    event = run(payload)
    assert type(event) is Event, event
    want = {
        "event_id": "e-1",
        "event_type": "click",
        "user_id": "u-1",
        "event_time_us": 1_699_999_200_000_000,
        "page": None,
        "value": 0,
        "properties": None,
        "key": None,
        "payload": payload,
        "source": "avro-test",
        "metadata": {"partition": 0},
        **expected,
    }
    assert {name: getattr(event, name) for name in want} == want
    assert type(event.value) is type(want["value"])


def test_avro_null_value_and_properties_mean_absent() -> None:
    decoded = decode_avro(avro(value=None, properties=None))
    assert isinstance(decoded, dict)
    assert "value" not in decoded and "properties" not in decoded
    assert decoded["page"] is None  # page keeps its null: null is a legal page


def test_decoder_for_avro_is_decode_avro() -> None:
    assert decoder_for("avro") is decode_avro
    with pytest.raises(ValueError, match="unknown format"):
        decoder_for("xml")


# ---------------------------------------------------------------------------------------------------------------
# Field faults expressible in Avro: the same validation as JSON.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "code", "field"),
    [
        pytest.param({"event_id": ""}, dl.INVALID_VALUE, "event_id", id="event_id-empty"),
        pytest.param({"event_id": "e" * 129}, dl.INVALID_VALUE, "event_id", id="event_id-129"),
        pytest.param({"event_type": ""}, dl.INVALID_VALUE, "event_type", id="event_type-empty"),
        pytest.param({"event_type": "Click"}, dl.INVALID_VALUE, "event_type", id="event_type-uppercase"),
        pytest.param({"event_type": "click\n"}, dl.INVALID_VALUE, "event_type", id="event_type-trailing-newline"),
        pytest.param({"event_type": "a" * 65}, dl.INVALID_VALUE, "event_type", id="event_type-65"),
        pytest.param({"user_id": ""}, dl.INVALID_VALUE, "user_id", id="user_id-empty"),
        pytest.param({"user_id": "u" * 257}, dl.INVALID_VALUE, "user_id", id="user_id-257"),
        pytest.param({"event_time": ""}, dl.INVALID_VALUE, "event_time", id="event_time-empty-string"),
        pytest.param({"event_time": "1700000000000"}, dl.INVALID_VALUE, "event_time", id="event_time-numeric-string"),
        pytest.param({"event_time": "2023-11-14 22:00:00Z"}, dl.INVALID_VALUE, "event_time", id="event_time-space"),
        pytest.param({"event_time": "2023-02-30T00:00:00Z"}, dl.INVALID_VALUE, "event_time", id="event_time-feb-30"),
        pytest.param({"event_time": "2023-11-14T22:00:00"}, dl.INVALID_VALUE, "event_time", id="event_time-no-offset"),
        pytest.param(
            {"event_time": "1999-12-31T23:59:59.999Z"}, dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-1999"
        ),
        pytest.param(
            {"event_time": MIN_MS - 1}, dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-ms-before-2000"
        ),
        pytest.param({"event_time": UPPER_MS + 1}, dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-ms-skew+1"),
        pytest.param({"event_time": -1}, dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-negative"),
        pytest.param({"event_time": 2**63 - 1}, dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-long-max"),
        pytest.param({"page": "p" * 2049}, dl.INVALID_VALUE, "page", id="page-2049"),
        pytest.param({"value": float("nan")}, dl.INVALID_VALUE, "value", id="value-nan"),
        pytest.param({"value": float("inf")}, dl.INVALID_VALUE, "value", id="value-inf"),
        pytest.param({"value": float("-inf")}, dl.INVALID_VALUE, "value", id="value-minus-inf"),
        # precedence holds in Avro too
        pytest.param(
            {"event_id": "", "event_type": "BAD"}, dl.INVALID_VALUE, "event_id", id="precedence-event-id-first"
        ),
        pytest.param(
            {"event_time": 0, "page": "p" * 3000, "value": float("nan")},
            dl.TIMESTAMP_OUT_OF_RANGE,
            "event_time",
            id="precedence-range-before-page",
        ),
        pytest.param({"page": "p" * 3000, "value": float("nan")}, dl.INVALID_VALUE, "page", id="precedence-page-first"),
    ],
)
def test_avro_field_faults(changes: dict[str, Any], code: str, field: str) -> None:
    assert_rejected(run(avro(**changes)), code, field)


# ---------------------------------------------------------------------------------------------------------------
# Payload-level faults
# ---------------------------------------------------------------------------------------------------------------

VALID = avro(page="/p", value=1.5, properties={"k": "vv"})


def test_every_truncation_of_a_valid_record_is_malformed() -> None:
    assert type(run(VALID)) is Event
    for cut in range(len(VALID)):
        assert_rejected(run(VALID[:cut]), dl.MALFORMED_AVRO, None)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(VALID + b"\x00", id="one-trailing-zero"),
        pytest.param(VALID + b"\xff\xff", id="trailing-garbage"),
        pytest.param(VALID + VALID, id="two-records"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x00", id="single-zero"),
        pytest.param(b"\xff" * 16, id="all-ff"),
        pytest.param(b"\x80" * 16, id="unterminated-varint"),
        pytest.param(b'{"event_id":"e-1"}', id="json-text"),
        pytest.param(b"\x01" + VALID[1:], id="negative-string-length"),
        pytest.param(b"\xfe\xff\xff\xff\x0f" + VALID[1:], id="huge-string-length"),
        pytest.param(splice(avro(event_time=5), b"\x02\x0a", b"\x06\x0a"), id="union-index-out-of-range"),
        pytest.param(avro()[:-1] + b"\x02\xfe\xff\xff\xff\x0f", id="map-block-count-huge"),
    ],
)
def test_malformed_avro(payload: bytes) -> None:
    assert_rejected(run(payload), dl.MALFORMED_AVRO, None)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(splice(avro(event_id="e@"), b"e@", b"e\xff"), dl.INVALID_ENCODING, id="event_id"),
        pytest.param(
            splice(avro(event_type="cl@ck"), b"cl@ck", b"cl\xc0\xafk"), dl.INVALID_ENCODING, id="event_type-overlong"
        ),
        pytest.param(
            splice(avro(user_id="u@@@"), b"u@@@", b"u\xed\xa0\x80"), dl.INVALID_ENCODING, id="user_id-encoded-surrogate"
        ),
        pytest.param(
            splice(avro(event_time="2023-11-14T22:00:00@"), b"00@", b"00\xff"),
            dl.INVALID_ENCODING,
            id="event_time-string",
        ),
        pytest.param(splice(avro(page="/@@"), b"/@@", b"/\xe2\x82"), dl.INVALID_ENCODING, id="page-truncated-sequence"),
        pytest.param(splice(avro(properties={"@": "v"}), b"@", b"\xff"), dl.INVALID_ENCODING, id="property-key"),
        pytest.param(splice(avro(properties={"k": "@"}), b"@", b"\x80"), dl.INVALID_ENCODING, id="property-value"),
        # invalid UTF-8 is found before the trailing bytes are noticed, as the contract's order asks
        pytest.param(
            splice(avro(event_id="e@"), b"e@", b"e\xff") + b"\x00", dl.INVALID_ENCODING, id="before-trailing-bytes"
        ),
    ],
)
def test_invalid_utf8_inside_avro_strings(payload: bytes, code: str) -> None:
    assert_rejected(run(payload), code, None)


def test_malformed_avro_messages_are_deterministic() -> None:
    """The same bytes give the same dead letter: no memory addresses ("<_io.BytesIO object at 0x...>")."""
    for cut in range(len(VALID)):
        first, second = decode_avro(VALID[:cut]), decode_avro(VALID[:cut])
        assert type(first) is Rejection and first == second
        assert " at 0x" not in first.message, first.message


def test_payload_too_large_wins_for_avro() -> None:
    assert_rejected(run(b"\xff" * 100, max_payload_bytes=99), dl.PAYLOAD_TOO_LARGE, None)
    assert type(run(VALID, max_payload_bytes=len(VALID))) is Event
    assert_rejected(run(VALID, max_payload_bytes=len(VALID) - 1), dl.PAYLOAD_TOO_LARGE, None)


def test_negative_union_index_is_malformed() -> None:
    payload = avro(event_time=1_700_000_000_000)
    assert payload.count(b"u-1\x02") == 1
    payload = payload.replace(b"u-1\x02", b"u-1\x01")  # event_time branch index 1 ("long") written as -1
    assert_rejected(run(payload), dl.MALFORMED_AVRO, None)


# ---------------------------------------------------------------------------------------------------------------
# Writer-schema evolution
# ---------------------------------------------------------------------------------------------------------------

SESSION = {"name": "session_id", "type": ["null", "string"], "default": None}


@pytest.mark.parametrize("after", ["user_id", "properties"], ids=["added-in-the-middle", "added-at-the-end"])
def test_newer_writer_schema_with_added_optional_field(after: str) -> None:
    writer = evolved(insert_after=after, field=SESSION)
    payload = avro(fastavro.parse_schema(writer), session_id="s-42", value=4, page="/x")
    decoded = avro_decoder(writer)(payload)
    assert isinstance(decoded, dict)
    assert "session_id" not in decoded  # resolved to the reader schema
    event = run(payload, decode=avro_decoder(writer))
    assert type(event) is Event
    assert (event.event_id, event.value, event.page, event.payload) == ("e-1", 4, "/x", payload)


def test_newer_writer_bytes_through_the_default_decoder_are_rejected_not_misread() -> None:
    writer = fastavro.parse_schema(evolved(insert_after="properties", field=SESSION))
    assert_rejected(run(avro(writer, session_id="s-42")), dl.MALFORMED_AVRO, None)


def test_newer_writer_schema_field_faults_still_apply() -> None:
    writer = evolved(insert_after="user_id", field=SESSION)
    payload = avro(fastavro.parse_schema(writer), session_id=None, event_id="")
    assert_rejected(run(payload, decode=avro_decoder(writer)), dl.INVALID_VALUE, "event_id")
    bad = splice(avro(fastavro.parse_schema(writer), user_id="u@"), b"u@", b"u\xff")
    assert_rejected(run(bad, decode=avro_decoder(writer)), dl.INVALID_ENCODING, None)
    assert_rejected(run(payload[:-1], decode=avro_decoder(writer)), dl.MALFORMED_AVRO, None)
    assert_rejected(run(payload + b"\x00", decode=avro_decoder(writer)), dl.MALFORMED_AVRO, None)


def test_invalid_utf8_in_a_writer_only_field() -> None:
    writer = evolved(insert_after="user_id", field=SESSION)
    bad = splice(avro(fastavro.parse_schema(writer), session_id="s@"), b"s@", b"s\xff")
    assert_rejected(run(bad, decode=avro_decoder(writer)), dl.INVALID_ENCODING, None)


def test_older_writer_schema_without_optional_fields_gets_their_defaults() -> None:
    writer = without("page", "value", "properties")
    out = io.BytesIO()
    fastavro.schemaless_writer(
        out,
        fastavro.parse_schema(writer),
        {k: BASE[k] for k in BASE if k in ("event_id", "event_type", "user_id", "event_time")},
    )
    event = run(out.getvalue(), decode=avro_decoder(writer))
    assert type(event) is Event
    assert (event.page, event.value, event.properties) == (None, 0, None)


def test_writer_schema_missing_a_required_field_cannot_be_read() -> None:
    writer = without("user_id")
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(writer), {k: v for k, v in BASE.items() if k != "user_id"})
    assert_rejected(run(out.getvalue(), decode=avro_decoder(writer)), dl.MALFORMED_AVRO, None)


def test_avro_decoder_default_is_the_contract_schema() -> None:
    assert avro_decoder()(VALID) == decode_avro(VALID)


# ---------------------------------------------------------------------------------------------------------------
# Container files
# ---------------------------------------------------------------------------------------------------------------

RECORDS = [
    {**BASE, "event_id": "a", "value": 2},
    {**BASE, "event_id": "b", "event_time": 1_700_000_000_000, "page": "/p", "properties": {"k": "v"}},
    {**BASE, "event_id": "", "value": 1.5},  # valid Avro, invalid event
    {**BASE, "event_id": "d", "event_type": "Bad"},
]


def container(records: list[dict[str, Any]], schema: Any = SCHEMA, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, schema, records, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize("codec", ["null", "deflate"])
def test_container_records_round_trip(codec: str) -> None:
    records = list(read_avro_container("mem://f.avro", container(RECORDS, codec=codec)))
    assert len(records) == len(RECORDS)
    for index, (rec, original) in enumerate(zip(records, RECORDS, strict=True)):
        assert rec.source == "mem://f.avro"
        assert rec.metadata == {"record": index}
        assert isinstance(rec.decoded, dict)
        # the payload is the record's schemaless encoding: decoding it again gives the same object
        assert decode_avro(rec.payload) == rec.decoded
        assert rec.payload == avro(**original)
        assert parse_record(rec, decode_avro, 1 << 20) is rec.decoded
    outcomes = [run_container_record(r) for r in records]
    assert type(outcomes[0]) is Event and outcomes[0].value == 2
    assert type(outcomes[1]) is Event and outcomes[1].properties == {"k": "v"}
    assert (outcomes[2].code, outcomes[2].field) == (dl.INVALID_VALUE, "event_id")
    assert (outcomes[3].code, outcomes[3].field) == (dl.INVALID_VALUE, "event_type")


def run_container_record(rec: SourceRecord) -> Event | Rejection:
    decoded = parse_record(rec, decode_avro, 1 << 20)
    if type(decoded) is Rejection:
        return decoded
    return EventValidator(clock=lambda: NOW_US).validate(decoded, rec)


def test_container_null_optionals_mean_absent() -> None:
    (rec,) = read_avro_container("f.avro", container([BASE]))
    assert "value" not in rec.decoded and "properties" not in rec.decoded
    event = run_container_record(rec)
    assert type(event) is Event and (event.value, event.properties) == (0, None)


def test_empty_container_yields_nothing() -> None:
    assert list(read_avro_container("f.avro", container([]))) == []


def test_container_with_newer_writer_schema() -> None:
    writer = fastavro.parse_schema(evolved(insert_after="user_id", field=SESSION))
    records = list(read_avro_container("f.avro", container([{**BASE, "session_id": "s"}], writer)))
    assert len(records) == 1
    # the payload is written with the file's writer schema; read back through that schema it is the same event
    decoded = avro_decoder(evolved(insert_after="user_id", field=SESSION))(records[0].payload)
    assert decoded == {k: v for k, v in records[0].decoded.items() if k != "session_id"}
    assert type(run_container_record(records[0])) is Event


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty-file"),
        pytest.param(b"not an avro file at all", id="text"),
        pytest.param(b"Obj\x01" + b"\x00" * 40, id="magic-then-zeros"),
        pytest.param(b"Obj\x01garbage" * 10, id="magic-then-garbage"),
        pytest.param(container(RECORDS)[:-20], id="truncated-block"),
        pytest.param(container(RECORDS)[:30], id="truncated-header"),
    ],
)
def test_corrupt_container_is_exactly_one_malformed_avro_record(data: bytes) -> None:
    records = list(read_avro_container("bad.avro", data))
    rejections = [r for r in records if type(r.decoded) is Rejection]
    assert len(rejections) == 1 and records[-1] is rejections[0]
    bad = rejections[0]
    assert (bad.decoded.code, bad.decoded.field) == (dl.MALFORMED_AVRO, None)
    assert bad.source == "bad.avro"
    assert bad.metadata["record"] == len(records) - 1
    assert 0 <= bad.metadata["byte_offset"] <= len(data)
    assert bad.payload == data[bad.metadata["byte_offset"] :][:1024]
    # parse_record hands the rejection on as the record's outcome
    assert parse_record(bad, decode_avro, 1 << 20) == bad.decoded


def test_corrupt_second_block_keeps_the_first_blocks_records() -> None:
    data = bytearray(container(RECORDS * 5, sync_interval=1))  # one block per record
    header_end = fastavro_header_end(bytes(data))
    sync = bytes(data[header_end - 16 : header_end])
    second_sync = bytes(data).index(sync, header_end)  # end of block 1
    data[second_sync] ^= 0xFF  # corrupt the sync marker after the first block
    records = list(read_avro_container("bad.avro", bytes(data)))
    assert [type(r.decoded) is Rejection for r in records] == [False, True]
    assert records[0].decoded["event_id"] == "a"
    assert records[1].decoded.code == dl.MALFORMED_AVRO
    assert records[1].metadata["record"] == 1


def fastavro_header_end(data: bytes) -> int:
    stream = io.BytesIO(data)
    fastavro.reader(stream)  # reads the header (magic, metadata, sync marker)
    return stream.tell()


def test_invalid_utf8_inside_a_container_record_is_one_rejection() -> None:
    data = container([{**BASE, "event_id": "x@"}, {**BASE, "event_id": "y"}])
    records = list(read_avro_container("bad.avro", splice(data, b"x@", b"x\xff")))
    assert len(records) == 1
    assert type(records[0].decoded) is Rejection
    assert records[0].decoded.code in (dl.MALFORMED_AVRO, dl.INVALID_ENCODING)
