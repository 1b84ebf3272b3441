"""Every contract error code, its field, and the order in which they are checked (docs/event-contract.md)."""

from __future__ import annotations

import io
import json

import fastavro
import pytest

import schemas
from transforms import dead_letter as dl
from transforms.parse import decode_avro, decode_json, parse_record
from transforms.records import Event, SourceRecord
from transforms.timefmt import parse_rfc3339_us
from transforms.validate import EventValidator

NOW_US = parse_rfc3339_us("2026-01-01T00:00:00Z")
VALID = {"event_id": "e1", "event_type": "click", "user_id": "u1", "event_time": "2025-06-01T12:00:00Z"}


def outcome(payload: bytes, fmt: str = "json", max_payload_bytes: int = 1 << 20, skew_s: int = 86400):
    decode = decode_json if fmt == "json" else decode_avro
    record = SourceRecord(payload, "test")
    parsed = parse_record(record, decode, max_payload_bytes)
    if type(parsed) is dl.Rejection:
        return parsed
    return EventValidator(max_clock_skew_s=skew_s, clock=lambda: NOW_US).validate(parsed, record)


def code(payload: bytes, **kwargs) -> tuple[str, str | None]:
    result = outcome(payload, **kwargs)
    assert type(result) is dl.Rejection, result
    return result.code, result.field


def with_(**changes) -> bytes:
    event = {**VALID, **changes}
    return json.dumps({k: v for k, v in event.items() if v is not _DROP}, ensure_ascii=False).encode()


_DROP = object()

CASES = [
    # payload level, in order
    ("too large", b"x" * 101, ("payload_too_large", None), {"max_payload_bytes": 100}),
    ("too large beats bad utf-8", b"\xff" * 101, ("payload_too_large", None), {"max_payload_bytes": 100}),
    ("invalid utf-8", b'{"event_id":"\xff"}', ("invalid_encoding", None), {}),
    ("invalid utf-8 after valid json", with_() + b" \xfe", ("invalid_encoding", None), {}),
    ("truncated", b'{"event_id": "x"', ("malformed_json", None), {}),
    ("empty", b"", ("malformed_json", None), {}),
    ("whitespace", b"  \n", ("malformed_json", None), {}),
    ("NaN literal", b'{"value": NaN}', ("malformed_json", None), {}),
    ("Infinity literal", b'{"value": Infinity}', ("malformed_json", None), {}),
    ("-Infinity literal", b'{"value": -Infinity}', ("malformed_json", None), {}),
    ("trailing garbage", with_() + b"x", ("malformed_json", None), {}),
    ("lone surrogate", b'{"event_id": "\\ud800"}', ("malformed_json", None), {}),
    ("byte order mark", b"\xef\xbb\xbf" + with_(), ("malformed_json", None), {}),
    ("deep nesting", b'{"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", ("malformed_json", None), {}),
    ("array", b"[1, 2]", ("not_an_object", None), {}),
    ("string", b'"event"', ("not_an_object", None), {}),
    ("null", b"null", ("not_an_object", None), {}),
    ("number", b"42", ("not_an_object", None), {}),
    # fields, in order
    ("no event_id", with_(event_id=_DROP), ("missing_field", "event_id"), {}),
    ("event_id null", with_(event_id=None), ("invalid_type", "event_id"), {}),
    ("event_id number", with_(event_id=7), ("invalid_type", "event_id"), {}),
    ("event_id empty", with_(event_id=""), ("invalid_value", "event_id"), {}),
    ("event_id 129", with_(event_id="x" * 129), ("invalid_value", "event_id"), {}),
    ("no event_type", with_(event_type=_DROP), ("missing_field", "event_type"), {}),
    ("event_type list", with_(event_type=["click"]), ("invalid_type", "event_type"), {}),
    ("event_type upper", with_(event_type="Click"), ("invalid_value", "event_type"), {}),
    ("event_type digit first", with_(event_type="1click"), ("invalid_value", "event_type"), {}),
    ("event_type newline", with_(event_type="click\n"), ("invalid_value", "event_type"), {}),
    ("event_type 65", with_(event_type="a" * 65), ("invalid_value", "event_type"), {}),
    ("no user_id", with_(user_id=_DROP), ("missing_field", "user_id"), {}),
    ("user_id bool", with_(user_id=True), ("invalid_type", "user_id"), {}),
    ("user_id 257", with_(user_id="u" * 257), ("invalid_value", "user_id"), {}),
    ("no event_time", with_(event_time=_DROP), ("missing_field", "event_time"), {}),
    ("event_time null", with_(event_time=None), ("invalid_type", "event_time"), {}),
    ("event_time bool", with_(event_time=True), ("invalid_type", "event_time"), {}),
    ("event_time object", with_(event_time={"ms": 1}), ("invalid_type", "event_time"), {}),
    ("event_time no offset", with_(event_time="2025-06-01T12:00:00"), ("invalid_value", "event_time"), {}),
    ("event_time space", with_(event_time="2025-06-01 12:00:00Z"), ("invalid_value", "event_time"), {}),
    ("event_time feb 30", with_(event_time="2025-02-30T00:00:00Z"), ("invalid_value", "event_time"), {}),
    ("event_time digits string", with_(event_time="1748779200000"), ("invalid_value", "event_time"), {}),
    ("event_time fraction ms", with_(event_time=1.5), ("invalid_value", "event_time"), {}),
    (
        "event_time before 2000",
        with_(event_time="1999-12-31T23:59:59.999Z"),
        ("timestamp_out_of_range", "event_time"),
        {},
    ),
    ("event_time negative ms", with_(event_time=-1), ("timestamp_out_of_range", "event_time"), {}),
    (
        "event_time beyond skew",
        with_(event_time="2026-01-02T00:00:00.001Z"),
        ("timestamp_out_of_range", "event_time"),
        {},
    ),
    ("page number", with_(page=3), ("invalid_type", "page"), {}),
    ("page 2049", with_(page="p" * 2049), ("invalid_value", "page"), {}),
    ("value string", with_(value="3"), ("invalid_type", "value"), {}),
    ("value bool", with_(value=False), ("invalid_type", "value"), {}),
    ("value null", with_(value=None), ("invalid_type", "value"), {}),
    ("value overflows", with_()[:-1] + b',"value":1e999}', ("invalid_value", "value"), {}),
    ("properties list", with_(properties=["a"]), ("invalid_type", "properties"), {}),
    ("properties null", with_(properties=None), ("invalid_type", "properties"), {}),
    ("properties non-string value", with_(properties={"a": 1}), ("invalid_type", "properties"), {}),
    # precedence between fields: the first field in contract order wins
    ("event_id type before missing event_type", b'{"event_id": 5}', ("invalid_type", "event_id"), {}),
    ("range before later field type", with_(event_time=1, page=5), ("timestamp_out_of_range", "event_time"), {}),
    ("missing user_id before bad value", with_(user_id=_DROP, value="x"), ("missing_field", "user_id"), {}),
]


@pytest.mark.parametrize(("payload", "expected", "kwargs"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_code_and_field(payload, expected, kwargs):
    assert code(payload, **kwargs) == expected


@pytest.mark.parametrize(
    ("changes", "check"),
    [
        ({}, lambda e: e.value == 0 and e.page is None and e.key is None),
        ({"event_id": "x" * 128, "user_id": "u" * 256}, lambda e: len(e.event_id) == 128),
        ({"event_type": "a" + "b" * 63}, lambda e: len(e.event_type) == 64),
        ({"event_time": "2000-01-01T00:00:00Z"}, lambda e: e.event_time_us == 946_684_800_000_000),
        ({"event_time": "2026-01-02T00:00:00Z"}, lambda e: e.event_time_us == NOW_US + 86_400_000_000),
        ({"event_time": "2025-06-01T17:30:00.1234567+05:30"}, lambda e: e.event_time_us % 1_000_000 == 123_456),
        ({"event_time": "2025-06-01t12:00:00z"}, lambda e: e.event_time_us == parse_rfc3339_us("2025-06-01T12:00:00Z")),
        ({"event_time": 1_748_779_200_000}, lambda e: e.event_time_us == 1_748_779_200_000_000),
        ({"event_time": 1.7487792e12}, lambda e: e.event_time_us == 1_748_779_200_000_000),
        ({"page": None, "value": -2.5}, lambda e: e.value == -2.5),
        ({"page": "p" * 2048, "value": 10**20}, lambda e: e.key == "p" * 2048),
        ({"properties": {}, "extra": {"nested": [1]}}, lambda e: e.properties == {}),
        ({"user_id": "🙂" * 256}, lambda e: len(e.user_id) == 256),
    ],
)
def test_valid_edge_cases(changes, check):
    result = outcome(with_(**changes))
    assert type(result) is Event, result
    assert check(result)


def test_exactly_the_payload_limit_is_accepted():
    payload = with_()
    assert type(outcome(payload, max_payload_bytes=len(payload))) is Event
    assert code(payload, max_payload_bytes=len(payload) - 1) == ("payload_too_large", None)


def _avro(record: dict) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, schemas.event_avro_schema(), record)
    return out.getvalue()


AVRO_VALID = {**VALID, "page": None, "value": None, "properties": None}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", ("malformed_avro", None)),
        (_avro(AVRO_VALID)[:-3], ("malformed_avro", None)),
        (_avro(AVRO_VALID) + b"\x00", ("malformed_avro", None)),
        (b"\x04\xff\xfe" + _avro(AVRO_VALID)[3:], ("invalid_encoding", None)),
        (_avro({**AVRO_VALID, "event_id": ""}), ("invalid_value", "event_id")),
        (_avro({**AVRO_VALID, "event_time": "yesterday"}), ("invalid_value", "event_time")),
        (_avro({**AVRO_VALID, "event_time": 5}), ("timestamp_out_of_range", "event_time")),
    ],
    ids=["empty", "truncated", "trailing", "utf8", "empty id", "bad time", "old time"],
)
def test_avro_error_codes(payload, expected):
    assert code(payload, fmt="avro") == expected


def test_avro_nulls_mean_absent():
    result = outcome(_avro(AVRO_VALID), fmt="avro")
    assert type(result) is Event and result.value == 0 and result.properties is None
