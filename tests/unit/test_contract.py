"""Event contract v1 for JSON input, table driven: every error code, every boundary, and the precedence rules.

Each rejection is checked as the exact pair (error_code, error_field); each valid record as the exact Event it
becomes. The clock is fixed (``NOW_US``) so the skew boundary is tested to the microsecond.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from transforms import dead_letter as dl
from transforms.dead_letter import Rejection
from transforms.parse import decode_json, parse_record
from transforms.records import Event, SourceRecord
from transforms.validate import EventValidator

NOW_US = 1_700_000_000_000_000  # 2023-11-14T22:13:20Z, the injected processing time
SKEW_US = 86_400 * 1_000_000  # default --max_clock_skew
UPPER_US = NOW_US + SKEW_US  # 2023-11-15T22:13:20Z, inclusive
MIN_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z, inclusive
MIB = 1 << 20

BASE_TIME = "2023-11-14T22:00:00Z"
BASE_TIME_US = 1_699_999_200_000_000
DROP = object()  # marks a field to leave out of the record


def js(value: Any) -> str:
    """A JSON literal for a Python value (raw UTF-8, not \\u escapes)."""
    return json.dumps(value, ensure_ascii=False)


BASE = {
    "event_id": js("e-1"),
    "event_type": js("click"),
    "user_id": js("u-1"),
    "event_time": js(BASE_TIME),
}


def record(**raw: Any) -> bytes:
    """The base event with fields replaced by raw JSON literals (``DROP`` removes one); new names are appended."""
    fields = dict(BASE)
    for name, literal in raw.items():
        if literal is DROP:
            fields.pop(name, None)
        else:
            fields[name] = literal
    return ("{" + ",".join(f"{js(k)}:{v}" for k, v in fields.items()) + "}").encode("utf-8")


def run(payload: bytes, *, max_payload_bytes: int = MIB, **validator_kwargs: Any) -> Event | Rejection:
    """parse_record + EventValidator, as the pipeline chains them, with the fixed clock."""
    rec = SourceRecord(payload, "test-source", {"offset": 7})
    decoded = parse_record(rec, decode_json, max_payload_bytes)
    if type(decoded) is Rejection:
        return decoded
    validator_kwargs.setdefault("clock", lambda: NOW_US)
    return EventValidator(**validator_kwargs).validate(decoded, rec)


def assert_rejected(result: Event | Rejection, code: str, field: str | None) -> Rejection:
    assert type(result) is Rejection, f"expected {code}/{field}, got a valid event {result!r}"[:500]
    assert (result.code, result.field) == (code, field), result.message
    assert isinstance(result.message, str) and result.message
    return result


def assert_valid(result: Event | Rejection) -> Event:
    assert type(result) is Event, f"expected a valid event, got {result!r}"[:500]
    return result


def padded_to(size: int) -> bytes:
    """A valid event of exactly ``size`` bytes (an ignored extra field takes up the room)."""
    empty = record(pad=js(""))
    payload = record(pad=js("x" * (size - len(empty))))
    assert len(payload) == size
    return payload


# ---------------------------------------------------------------------------------------------------------------
# Payload-level codes: error_field is always null.
# ---------------------------------------------------------------------------------------------------------------

PAYLOAD_REJECTIONS = [
    # invalid_encoding: checked before syntax, anywhere in the payload.
    pytest.param(b"\xff", dl.INVALID_ENCODING, id="encoding-lone-ff"),
    pytest.param(b"\x80", dl.INVALID_ENCODING, id="encoding-lone-continuation"),
    pytest.param(b'{"a":"\xc0\xaf"}', dl.INVALID_ENCODING, id="encoding-overlong"),
    pytest.param(b'{"a":"\xed\xa0\x80"}', dl.INVALID_ENCODING, id="encoding-utf8-encoded-surrogate"),
    pytest.param(b'{"a":"\xe2\x82"}', dl.INVALID_ENCODING, id="encoding-truncated-sequence"),
    pytest.param(b'{"a":"\xf4\x90\x80\x80"}', dl.INVALID_ENCODING, id="encoding-beyond-u10ffff"),
    pytest.param(record(event_id=js("e-@")).replace(b"@", b"\xff"), dl.INVALID_ENCODING, id="encoding-in-event-id"),
    pytest.param(record() + b"\xff", dl.INVALID_ENCODING, id="encoding-after-valid-json"),
    pytest.param(b"{\xff", dl.INVALID_ENCODING, id="encoding-beats-malformed"),
    pytest.param(b"\xff\xfe{\x00}\x00", dl.INVALID_ENCODING, id="encoding-utf16"),
    # malformed_json
    pytest.param(b"", dl.MALFORMED_JSON, id="json-empty"),
    pytest.param(b"   \n\t\r ", dl.MALFORMED_JSON, id="json-whitespace-only"),
    pytest.param(b"{", dl.MALFORMED_JSON, id="json-unterminated-object"),
    pytest.param(record()[:-1], dl.MALFORMED_JSON, id="json-truncated-event"),
    pytest.param(b'{"a":1,}', dl.MALFORMED_JSON, id="json-trailing-comma"),
    pytest.param(record() + b" x", dl.MALFORMED_JSON, id="json-trailing-garbage"),
    pytest.param(record() + record(), dl.MALFORMED_JSON, id="json-two-objects"),
    pytest.param(b"\xef\xbb\xbf" + record(), dl.MALFORMED_JSON, id="json-bom"),
    pytest.param(b"{'event_id':'e'}", dl.MALFORMED_JSON, id="json-single-quotes"),
    pytest.param(b"{event_id:1}", dl.MALFORMED_JSON, id="json-unquoted-key"),
    pytest.param(b'{"a":1}//c', dl.MALFORMED_JSON, id="json-comment"),
    pytest.param(record(value="01"), dl.MALFORMED_JSON, id="json-leading-zero"),
    pytest.param(record(value="0x10"), dl.MALFORMED_JSON, id="json-hex"),
    pytest.param(record(value="+1"), dl.MALFORMED_JSON, id="json-plus-sign"),
    pytest.param(record(value=".5"), dl.MALFORMED_JSON, id="json-bare-fraction"),
    pytest.param(record(value="NaN"), dl.MALFORMED_JSON, id="json-nan"),
    pytest.param(record(value="Infinity"), dl.MALFORMED_JSON, id="json-infinity"),
    pytest.param(record(value="-Infinity"), dl.MALFORMED_JSON, id="json-minus-infinity"),
    pytest.param(record(extra="NaN"), dl.MALFORMED_JSON, id="json-nan-in-ignored-field"),
    pytest.param(b"NaN", dl.MALFORMED_JSON, id="json-top-level-nan"),
    pytest.param(record(event_id='"\\ud800"'), dl.MALFORMED_JSON, id="json-lone-high-surrogate"),
    pytest.param(record(event_id='"\\udc00x"'), dl.MALFORMED_JSON, id="json-lone-low-surrogate"),
    pytest.param(record(extra='{"k":["\\ud83d"]}'), dl.MALFORMED_JSON, id="json-lone-surrogate-in-ignored-field"),
    pytest.param(record(extra='{"\\udfff":1}'), dl.MALFORMED_JSON, id="json-lone-surrogate-in-key"),
    pytest.param(record(event_id='"a\tb"'), dl.MALFORMED_JSON, id="json-raw-control-char-in-string"),
    pytest.param(record(event_id='"\\x41"'), dl.MALFORMED_JSON, id="json-bad-escape"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, dl.MALFORMED_JSON, id="json-nesting-100000"),
    pytest.param(b'{"a":' * 5000 + b"1" + b"}" * 5000, dl.MALFORMED_JSON, id="json-object-nesting-5000"),
    pytest.param(record(extra="[" * 2000 + "]" * 2000), dl.MALFORMED_JSON, id="json-nesting-2000-in-ignored-field"),
    # not_an_object
    pytest.param(b"[]", dl.NOT_AN_OBJECT, id="top-level-empty-array"),
    pytest.param(b"[" + record() + b"]", dl.NOT_AN_OBJECT, id="top-level-array-of-event"),
    pytest.param(b'"event"', dl.NOT_AN_OBJECT, id="top-level-string"),
    pytest.param(b"42", dl.NOT_AN_OBJECT, id="top-level-int"),
    pytest.param(b"-1.5e3", dl.NOT_AN_OBJECT, id="top-level-float"),
    pytest.param(b"1e999", dl.NOT_AN_OBJECT, id="top-level-overflowing-number"),
    pytest.param(b"null", dl.NOT_AN_OBJECT, id="top-level-null"),
    pytest.param(b"true", dl.NOT_AN_OBJECT, id="top-level-true"),
    pytest.param(b"  \n[1]\n", dl.NOT_AN_OBJECT, id="top-level-array-with-whitespace"),
]


@pytest.mark.parametrize(("payload", "code"), PAYLOAD_REJECTIONS)
def test_payload_level_rejections(payload: bytes, code: str) -> None:
    assert_rejected(run(payload), code, None)


@pytest.mark.parametrize(("payload", "code"), PAYLOAD_REJECTIONS)
def test_decode_json_alone_gives_the_same_code(payload: bytes, code: str) -> None:
    result = decode_json(payload)
    assert type(result) is Rejection
    assert (result.code, result.field) == (code, None)


# ---------------------------------------------------------------------------------------------------------------
# Size limit: len(payload) > max_payload_bytes; exactly the limit is fine; it wins over every other code.
# ---------------------------------------------------------------------------------------------------------------


def test_payload_of_exactly_the_default_limit_is_accepted() -> None:
    assert_valid(run(padded_to(MIB)))


def test_payload_one_byte_over_the_default_limit_is_too_large() -> None:
    assert_rejected(run(padded_to(MIB + 1)), dl.PAYLOAD_TOO_LARGE, None)


@pytest.mark.parametrize(
    ("payload", "limit", "code"),
    [
        pytest.param(padded_to(200), 200, None, id="exactly-limit-valid"),
        pytest.param(padded_to(201), 200, dl.PAYLOAD_TOO_LARGE, id="limit-plus-one"),
        pytest.param(b"\xff" * 201, 200, dl.PAYLOAD_TOO_LARGE, id="too-large-beats-invalid-encoding"),
        pytest.param(b"{" * 201, 200, dl.PAYLOAD_TOO_LARGE, id="too-large-beats-malformed"),
        pytest.param(b"[" + b"1," * 100 + b"1]", 200, dl.PAYLOAD_TOO_LARGE, id="too-large-beats-not-an-object"),
        pytest.param(b"{}" + b" " * 199, 200, dl.PAYLOAD_TOO_LARGE, id="too-large-beats-missing-field"),
        pytest.param(b"\xff", 1, dl.INVALID_ENCODING, id="one-byte-limit-one-byte-payload"),
        pytest.param(b"", 0, dl.MALFORMED_JSON, id="zero-limit-empty-payload"),
        pytest.param(b"{}", 1, dl.PAYLOAD_TOO_LARGE, id="two-bytes-over-one-byte-limit"),
    ],
)
def test_size_limit(payload: bytes, limit: int, code: str | None) -> None:
    result = run(payload, max_payload_bytes=limit)
    if code is None:
        assert_valid(result)
    else:
        assert_rejected(result, code, None)


def test_size_limit_counts_bytes_not_characters() -> None:
    payload = record(pad=js("é" * 50))  # 2 bytes each in UTF-8
    assert_valid(run(payload, max_payload_bytes=len(payload)))
    assert_rejected(run(payload, max_payload_bytes=len(payload) - 1), dl.PAYLOAD_TOO_LARGE, None)


# ---------------------------------------------------------------------------------------------------------------
# Field rejections, field by field in the table's order.
# ---------------------------------------------------------------------------------------------------------------

FIELD_REJECTIONS = [
    # event_id: required string, 1-128 code points
    pytest.param(record(event_id=DROP), dl.MISSING_FIELD, "event_id", id="event_id-missing"),
    pytest.param(record(event_id="null"), dl.INVALID_TYPE, "event_id", id="event_id-null"),
    pytest.param(record(event_id="5"), dl.INVALID_TYPE, "event_id", id="event_id-int"),
    pytest.param(record(event_id="1.5"), dl.INVALID_TYPE, "event_id", id="event_id-float"),
    pytest.param(record(event_id="true"), dl.INVALID_TYPE, "event_id", id="event_id-bool"),
    pytest.param(record(event_id='["e"]'), dl.INVALID_TYPE, "event_id", id="event_id-array"),
    pytest.param(record(event_id='{"id":"e"}'), dl.INVALID_TYPE, "event_id", id="event_id-object"),
    pytest.param(record(event_id=js("")), dl.INVALID_VALUE, "event_id", id="event_id-empty"),
    pytest.param(record(event_id=js("e" * 129)), dl.INVALID_VALUE, "event_id", id="event_id-129-chars"),
    pytest.param(record(event_id=js("😀" * 129)), dl.INVALID_VALUE, "event_id", id="event_id-129-astral-chars"),
    # event_type: required string matching ^[a-z][a-z0-9_]{0,63}$
    pytest.param(record(event_type=DROP), dl.MISSING_FIELD, "event_type", id="event_type-missing"),
    pytest.param(record(event_type="null"), dl.INVALID_TYPE, "event_type", id="event_type-null"),
    pytest.param(record(event_type="1"), dl.INVALID_TYPE, "event_type", id="event_type-int"),
    pytest.param(record(event_type="false"), dl.INVALID_TYPE, "event_type", id="event_type-bool"),
    pytest.param(record(event_type='["click"]'), dl.INVALID_TYPE, "event_type", id="event_type-array"),
    pytest.param(record(event_type=js("")), dl.INVALID_VALUE, "event_type", id="event_type-empty"),
    pytest.param(record(event_type=js("a" * 65)), dl.INVALID_VALUE, "event_type", id="event_type-65-chars"),
    pytest.param(record(event_type=js("Click")), dl.INVALID_VALUE, "event_type", id="event_type-uppercase"),
    pytest.param(record(event_type=js("1click")), dl.INVALID_VALUE, "event_type", id="event_type-leading-digit"),
    pytest.param(record(event_type=js("_click")), dl.INVALID_VALUE, "event_type", id="event_type-leading-underscore"),
    pytest.param(record(event_type=js("click-now")), dl.INVALID_VALUE, "event_type", id="event_type-hyphen"),
    pytest.param(record(event_type=js("click now")), dl.INVALID_VALUE, "event_type", id="event_type-space"),
    pytest.param(record(event_type=js("click\n")), dl.INVALID_VALUE, "event_type", id="event_type-trailing-newline"),
    pytest.param(record(event_type=js("\nclick")), dl.INVALID_VALUE, "event_type", id="event_type-leading-newline"),
    pytest.param(record(event_type=js("click ")), dl.INVALID_VALUE, "event_type", id="event_type-trailing-space"),
    pytest.param(record(event_type=js("clïck")), dl.INVALID_VALUE, "event_type", id="event_type-non-ascii-letter"),
    pytest.param(record(event_type=js("click٣")), dl.INVALID_VALUE, "event_type", id="event_type-non-ascii-digit"),
    pytest.param(record(event_type=js("ｃlick")), dl.INVALID_VALUE, "event_type", id="event_type-fullwidth-letter"),
    pytest.param(record(event_type=js("\u212aelvin")), dl.INVALID_VALUE, "event_type", id="event_type-kelvin-sign"),
    pytest.param(
        record(event_type=js("a" + "b" * 63 + "\n")),
        dl.INVALID_VALUE,
        "event_type",
        id="event_type-64-chars-plus-newline",
    ),
    # user_id: required string, 1-256 code points
    pytest.param(record(user_id=DROP), dl.MISSING_FIELD, "user_id", id="user_id-missing"),
    pytest.param(record(user_id="null"), dl.INVALID_TYPE, "user_id", id="user_id-null"),
    pytest.param(record(user_id="12345"), dl.INVALID_TYPE, "user_id", id="user_id-int"),
    pytest.param(record(user_id="{}"), dl.INVALID_TYPE, "user_id", id="user_id-object"),
    pytest.param(record(user_id=js("")), dl.INVALID_VALUE, "user_id", id="user_id-empty"),
    pytest.param(record(user_id=js("u" * 257)), dl.INVALID_VALUE, "user_id", id="user_id-257-chars"),
    pytest.param(record(user_id=js("ü" * 257)), dl.INVALID_VALUE, "user_id", id="user_id-257-two-byte-chars"),
    # event_time: type
    pytest.param(record(event_time=DROP), dl.MISSING_FIELD, "event_time", id="event_time-missing"),
    pytest.param(record(event_time="null"), dl.INVALID_TYPE, "event_time", id="event_time-null"),
    pytest.param(record(event_time="true"), dl.INVALID_TYPE, "event_time", id="event_time-true"),
    pytest.param(record(event_time="false"), dl.INVALID_TYPE, "event_time", id="event_time-false"),
    pytest.param(record(event_time="[1700000000000]"), dl.INVALID_TYPE, "event_time", id="event_time-array"),
    pytest.param(record(event_time='{"ms":1700000000000}'), dl.INVALID_TYPE, "event_time", id="event_time-object"),
    # event_time: content (invalid_value)
    pytest.param(record(event_time=js("")), dl.INVALID_VALUE, "event_time", id="event_time-empty-string"),
    pytest.param(
        record(event_time=js("1700000000000")), dl.INVALID_VALUE, "event_time", id="event_time-numeric-string"
    ),
    pytest.param(record(event_time=js("yesterday")), dl.INVALID_VALUE, "event_time", id="event_time-words"),
    pytest.param(
        record(event_time=js("2023-11-14 22:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-space-separator"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00")), dl.INVALID_VALUE, "event_time", id="event_time-no-offset"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00.123")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-fraction-no-offset",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00+0530")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-offset-without-colon",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00+05")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-offset-hours-only",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00 Z")), dl.INVALID_VALUE, "event_time", id="event_time-space-before-z"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-no-seconds"
    ),
    pytest.param(record(event_time=js("2023-11-14")), dl.INVALID_VALUE, "event_time", id="event_time-date-only"),
    pytest.param(
        record(event_time=js("20231114T220000Z")), dl.INVALID_VALUE, "event_time", id="event_time-basic-format"
    ),
    pytest.param(
        record(event_time=js("2023-W46-2T22:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-week-date"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00.Z")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-dot-without-digits",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00,5Z")), dl.INVALID_VALUE, "event_time", id="event_time-comma-fraction"
    ),
    pytest.param(
        record(event_time=js("2023-2-14T22:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-one-digit-month"
    ),
    pytest.param(
        record(event_time=js("+2023-11-14T22:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-signed-year"
    ),
    pytest.param(record(event_time=js(" " + BASE_TIME)), dl.INVALID_VALUE, "event_time", id="event_time-leading-space"),
    pytest.param(
        record(event_time=js(BASE_TIME + "\n")), dl.INVALID_VALUE, "event_time", id="event_time-trailing-newline"
    ),
    pytest.param(record(event_time=js("2023-02-30T00:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-feb-30"),
    pytest.param(
        record(event_time=js("2023-02-29T00:00:00Z")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-feb-29-non-leap-year",
    ),
    pytest.param(
        record(event_time=js("2100-02-29T00:00:00Z")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-feb-29-century-non-leap",
    ),
    pytest.param(record(event_time=js("2023-04-31T00:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-apr-31"),
    pytest.param(
        record(event_time=js("2023-13-01T00:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-month-13"
    ),
    pytest.param(
        record(event_time=js("2023-00-10T00:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-month-0"
    ),
    pytest.param(record(event_time=js("2023-11-00T00:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-day-0"),
    pytest.param(
        record(event_time=js("2023-11-14T24:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-hour-24"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:60:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-minute-60"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:61Z")), dl.INVALID_VALUE, "event_time", id="event_time-second-61"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00+24:00")), dl.INVALID_VALUE, "event_time", id="event_time-offset-24h"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:00+05:60")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-offset-minute-60",
    ),
    pytest.param(record(event_time=js("0000-01-01T00:00:00Z")), dl.INVALID_VALUE, "event_time", id="event_time-year-0"),
    pytest.param(
        record(event_time=js("２０２３-11-14T22:00:00Z")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-fullwidth-digits",
    ),
    pytest.param(
        record(event_time=js("٢٠٢٣-١١-١٤T22:00:00Z")),
        dl.INVALID_VALUE,
        "event_time",
        id="event_time-arabic-indic-digits",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:00:0߀Z")), dl.INVALID_VALUE, "event_time", id="event_time-nko-digit"
    ),
    pytest.param(record(event_time="1.5"), dl.INVALID_VALUE, "event_time", id="event_time-non-integral-float"),
    pytest.param(
        record(event_time="1700000000000.5"), dl.INVALID_VALUE, "event_time", id="event_time-ms-with-fraction"
    ),
    pytest.param(record(event_time="1e999"), dl.INVALID_VALUE, "event_time", id="event_time-overflowing-float"),
    pytest.param(record(event_time="-1e999"), dl.INVALID_VALUE, "event_time", id="event_time-negative-overflow"),
    # event_time: range (timestamp_out_of_range); lower bound 2000-01-01T00:00:00Z inclusive
    pytest.param(
        record(event_time=js("1999-12-31T23:59:59.999Z")),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-1999-12-31T23:59:59.999Z",
    ),
    pytest.param(
        record(event_time=js("1999-12-31T23:59:59.999999Z")),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-one-microsecond-before-2000",
    ),
    pytest.param(
        record(event_time=js("2000-01-01T05:29:59.999999+05:30")),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-before-2000-via-offset",
    ),
    pytest.param(
        record(event_time=js("1999-12-31T18:59:59-05:00")),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-before-2000-via-negative-offset",
    ),
    pytest.param(
        record(event_time="946684799999"), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-ms-one-before-2000"
    ),
    pytest.param(record(event_time="0"), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-ms-zero"),
    pytest.param(record(event_time="-1"), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-ms-negative"),
    pytest.param(
        record(event_time="1700000000"), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-epoch-seconds-not-ms"
    ),
    pytest.param(
        record(event_time="9.466847e11"),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-integral-float-before-2000",
    ),
    pytest.param(
        record(event_time=js("1970-01-01T00:00:00Z")), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-epoch"
    ),
    pytest.param(
        record(event_time=js("0001-01-01T00:00:00Z")), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-year-1"
    ),
    # upper bound: processing time + skew, inclusive
    pytest.param(
        record(event_time=js("2023-11-15T22:13:20.000001Z")),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-skew-plus-1us",
    ),
    pytest.param(
        record(event_time=str(UPPER_US // 1000 + 1)),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-ms-skew-plus-1ms",
    ),
    pytest.param(
        record(event_time=js("2023-11-15T23:13:20.001+01:00")),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-skew-plus-1ms-via-offset",
    ),
    pytest.param(
        record(event_time=js("9999-12-31T23:59:59Z")),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-year-9999",
    ),
    pytest.param(
        record(event_time="1e20"), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-huge-integral-float"
    ),
    pytest.param(
        record(event_time="9223372036854775807"), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-int64-max"
    ),
    pytest.param(record(event_time="1" + "0" * 40), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-int-10e40"),
    pytest.param(
        record(event_time="-" + "9" * 40), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-int-minus-10e40"
    ),
    pytest.param(
        record(event_time="9" * 5000), dl.TIMESTAMP_OUT_OF_RANGE, "event_time", id="event_time-int-5000-digits"
    ),
    pytest.param(
        record(event_time="-" + "9" * 5000),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="event_time-int-minus-5000-digits",
    ),
    # page: optional string <= 2048 or null
    pytest.param(record(page="5"), dl.INVALID_TYPE, "page", id="page-int"),
    pytest.param(record(page="0.5"), dl.INVALID_TYPE, "page", id="page-float"),
    pytest.param(record(page="true"), dl.INVALID_TYPE, "page", id="page-bool"),
    pytest.param(record(page='["/home"]'), dl.INVALID_TYPE, "page", id="page-array"),
    pytest.param(record(page='{"path":"/"}'), dl.INVALID_TYPE, "page", id="page-object"),
    pytest.param(record(page=js("p" * 2049)), dl.INVALID_VALUE, "page", id="page-2049-chars"),
    pytest.param(record(page=js("€" * 2049)), dl.INVALID_VALUE, "page", id="page-2049-three-byte-chars"),
    # value: optional finite number; absent = 0
    pytest.param(record(value="null"), dl.INVALID_TYPE, "value", id="value-null"),
    pytest.param(record(value="true"), dl.INVALID_TYPE, "value", id="value-true"),
    pytest.param(record(value="false"), dl.INVALID_TYPE, "value", id="value-false"),
    pytest.param(record(value=js("5")), dl.INVALID_TYPE, "value", id="value-numeric-string"),
    pytest.param(record(value=js("NaN")), dl.INVALID_TYPE, "value", id="value-nan-string"),
    pytest.param(record(value="[1]"), dl.INVALID_TYPE, "value", id="value-array"),
    pytest.param(record(value='{"v":1}'), dl.INVALID_TYPE, "value", id="value-object"),
    pytest.param(record(value="1e999"), dl.INVALID_VALUE, "value", id="value-1e999"),
    pytest.param(record(value="-1e999"), dl.INVALID_VALUE, "value", id="value-minus-1e999"),
    pytest.param(record(value="1.8e308"), dl.INVALID_VALUE, "value", id="value-1.8e308"),
    pytest.param(record(value="1" + "0" * 309), dl.INVALID_VALUE, "value", id="value-int-10e309"),
    pytest.param(record(value="-1" + "0" * 309), dl.INVALID_VALUE, "value", id="value-int-minus-10e309"),
    pytest.param(record(value="9" * 400), dl.INVALID_VALUE, "value", id="value-int-400-digits"),
    pytest.param(record(value="9" * 5000), dl.INVALID_VALUE, "value", id="value-int-5000-digits"),
    pytest.param(record(value="-" + "9" * 5000), dl.INVALID_VALUE, "value", id="value-int-minus-5000-digits"),
    # properties: optional object of string -> string
    pytest.param(record(properties="null"), dl.INVALID_TYPE, "properties", id="properties-null"),
    pytest.param(record(properties="[]"), dl.INVALID_TYPE, "properties", id="properties-empty-array"),
    pytest.param(record(properties='[["k","v"]]'), dl.INVALID_TYPE, "properties", id="properties-array-of-pairs"),
    pytest.param(record(properties=js("k=v")), dl.INVALID_TYPE, "properties", id="properties-string"),
    pytest.param(record(properties="1"), dl.INVALID_TYPE, "properties", id="properties-int"),
    pytest.param(record(properties='{"k":1}'), dl.INVALID_TYPE, "properties", id="properties-int-value"),
    pytest.param(record(properties='{"k":1.5}'), dl.INVALID_TYPE, "properties", id="properties-float-value"),
    pytest.param(record(properties='{"k":true}'), dl.INVALID_TYPE, "properties", id="properties-bool-value"),
    pytest.param(record(properties='{"k":null}'), dl.INVALID_TYPE, "properties", id="properties-null-value"),
    pytest.param(record(properties='{"k":["v"]}'), dl.INVALID_TYPE, "properties", id="properties-array-value"),
    pytest.param(record(properties='{"k":{"n":"v"}}'), dl.INVALID_TYPE, "properties", id="properties-nested-object"),
    pytest.param(
        record(properties='{"a":"ok","b":2}'), dl.INVALID_TYPE, "properties", id="properties-second-value-bad"
    ),
]


@pytest.mark.parametrize(("payload", "code", "field"), FIELD_REJECTIONS)
def test_field_rejections(payload: bytes, code: str, field: str) -> None:
    assert_rejected(run(payload), code, field)


@pytest.mark.parametrize(
    ("properties", "key"),
    [
        pytest.param('{"country":7}', "country", id="int"),
        pytest.param('{"ok":"x","br\\u00fcck\\u00e9":null}', "brücké", id="unicode-key"),
    ],
)
def test_bad_property_value_names_the_key_in_the_message(properties: str, key: str) -> None:
    rejection = assert_rejected(run(record(properties=properties)), dl.INVALID_TYPE, "properties")
    assert key in rejection.message


# ---------------------------------------------------------------------------------------------------------------
# Precedence: field-major order; within a field missing -> type -> value -> range; the first failure decides.
# ---------------------------------------------------------------------------------------------------------------

PRECEDENCE = [
    pytest.param(b"{}", dl.MISSING_FIELD, "event_id", id="empty-object-reports-event-id"),
    pytest.param(b'{"extra":1}', dl.MISSING_FIELD, "event_id", id="only-extras"),
    pytest.param(
        record(event_id="5", user_id=DROP), dl.INVALID_TYPE, "event_id", id="event-id-type-before-user-id-missing"
    ),
    pytest.param(
        record(event_id=js(""), event_type=DROP),
        dl.INVALID_VALUE,
        "event_id",
        id="event-id-value-before-event-type-missing",
    ),
    pytest.param(
        record(event_id=DROP, event_type="1", user_id="null", event_time="true"),
        dl.MISSING_FIELD,
        "event_id",
        id="event-id-missing-before-all-type-errors",
    ),
    pytest.param(
        record(event_type=js("BAD"), user_id=DROP),
        dl.INVALID_VALUE,
        "event_type",
        id="event-type-value-before-user-id-missing",
    ),
    pytest.param(
        record(event_type="null", event_time=DROP),
        dl.INVALID_TYPE,
        "event_type",
        id="event-type-type-before-event-time-missing",
    ),
    pytest.param(
        record(user_id=js(""), event_time=DROP),
        dl.INVALID_VALUE,
        "user_id",
        id="user-id-value-before-event-time-missing",
    ),
    pytest.param(
        record(user_id=DROP, event_time=js("bad"), page="1", value="true"),
        dl.MISSING_FIELD,
        "user_id",
        id="user-id-missing-before-later-fields",
    ),
    pytest.param(
        record(event_time=js("1999-01-01T00:00:00Z"), page="5"),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="out-of-range-before-page-type",
    ),
    pytest.param(
        record(event_time="0", value="null", properties="[]"),
        dl.TIMESTAMP_OUT_OF_RANGE,
        "event_time",
        id="out-of-range-ms-before-value-and-properties",
    ),
    pytest.param(
        record(event_time=js("2023-02-30T00:00:00Z"), value="true"),
        dl.INVALID_VALUE,
        "event_time",
        id="unparseable-time-before-value-type",
    ),
    pytest.param(record(event_time="null", page="5"), dl.INVALID_TYPE, "event_time", id="time-type-before-page-type"),
    pytest.param(
        record(page=js("p" * 2049), value="null"), dl.INVALID_VALUE, "page", id="page-value-before-value-type"
    ),
    pytest.param(record(page="[]", properties="1"), dl.INVALID_TYPE, "page", id="page-type-before-properties-type"),
    pytest.param(
        record(value=js("1"), properties="null"), dl.INVALID_TYPE, "value", id="value-type-before-properties-type"
    ),
    pytest.param(
        record(value="1e999", properties='{"k":1}'), dl.INVALID_VALUE, "value", id="value-overflow-before-properties"
    ),
    pytest.param(record(event_id="5", extra="NaN"), dl.MALFORMED_JSON, None, id="malformed-before-field-errors"),
    pytest.param(
        record(event_id="5", extra='"\\ud800"'), dl.MALFORMED_JSON, None, id="lone-surrogate-before-field-errors"
    ),
    pytest.param(record(event_id="5") + b"\xff", dl.INVALID_ENCODING, None, id="encoding-before-field-errors"),
    pytest.param(b"\xff" + b"NaN", dl.INVALID_ENCODING, None, id="encoding-before-malformed"),
    pytest.param(b'[{"event_id":5}]', dl.NOT_AN_OBJECT, None, id="not-an-object-before-field-errors"),
    pytest.param(
        b'{"event_id":5,"event_id":"e-2","event_type":"Bad"}',
        dl.INVALID_VALUE,
        "event_type",
        id="duplicate-key-last-wins-then-event-type",
    ),
    pytest.param(b'{"event_id":"e-2","event_id":5}', dl.INVALID_TYPE, "event_id", id="duplicate-key-last-wins-bad"),
]


@pytest.mark.parametrize(("payload", "code", "field"), PRECEDENCE)
def test_precedence(payload: bytes, code: str, field: str | None) -> None:
    assert_rejected(run(payload), code, field)


# ---------------------------------------------------------------------------------------------------------------
# Valid records: the exact Event.
# ---------------------------------------------------------------------------------------------------------------

VALID = [
    pytest.param(record(), {}, id="minimal"),
    # event_id / event_type / user_id boundaries
    pytest.param(record(event_id=js("e")), {"event_id": "e"}, id="event_id-1-char"),
    pytest.param(record(event_id=js("e" * 128)), {"event_id": "e" * 128}, id="event_id-128-chars"),
    pytest.param(record(event_id=js("😀" * 128)), {"event_id": "😀" * 128}, id="event_id-128-astral-chars"),
    pytest.param(record(event_id='"\\ud83d\\ude00"'), {"event_id": "😀"}, id="event_id-escaped-surrogate-pair"),
    pytest.param(record(event_id=js("e\u0301" * 64)), {"event_id": "e\u0301" * 64}, id="event_id-combining-marks-128"),
    pytest.param(record(event_id=js(" ")), {"event_id": " "}, id="event_id-space"),
    pytest.param(record(event_id=js("\u0000")), {"event_id": "\u0000"}, id="event_id-escaped-nul"),
    pytest.param(record(event_type=js("a")), {"event_type": "a"}, id="event_type-1-char"),
    pytest.param(
        record(event_type=js("a" + "_9" * 31 + "z")), {"event_type": "a" + "_9" * 31 + "z"}, id="event_type-64-chars"
    ),
    pytest.param(
        record(event_type=js("page_view_2")), {"event_type": "page_view_2"}, id="event_type-digits-underscore"
    ),
    pytest.param(record(event_type=js("a_")), {"event_type": "a_"}, id="event_type-trailing-underscore"),
    pytest.param(record(user_id=js("u")), {"user_id": "u"}, id="user_id-1-char"),
    pytest.param(record(user_id=js("u" * 256)), {"user_id": "u" * 256}, id="user_id-256-chars"),
    pytest.param(record(user_id=js("ü" * 256)), {"user_id": "ü" * 256}, id="user_id-256-two-byte-chars"),
    # event_time: RFC 3339 forms
    pytest.param(
        record(event_time=js("2000-01-01T00:00:00Z")), {"event_time_us": MIN_US}, id="event_time-min-inclusive"
    ),
    pytest.param(
        record(event_time=js("2000-01-01T05:30:00+05:30")), {"event_time_us": MIN_US}, id="event_time-min-via-offset"
    ),
    pytest.param(
        record(event_time=js("1999-12-31T19:00:00-05:00")),
        {"event_time_us": MIN_US},
        id="event_time-min-via-negative-offset",
    ),
    pytest.param(
        record(event_time=js("2000-01-01T00:00:00.000001Z")),
        {"event_time_us": MIN_US + 1},
        id="event_time-min-plus-1us",
    ),
    pytest.param(
        record(event_time=js("2023-11-15T22:13:20Z")), {"event_time_us": UPPER_US}, id="event_time-skew-inclusive"
    ),
    pytest.param(
        record(event_time=js("2023-11-15T22:13:20.000000999Z")),
        {"event_time_us": UPPER_US},
        id="event_time-skew-with-truncated-nanos",
    ),
    pytest.param(
        record(event_time=js("2023-11-16T03:43:20+05:30")), {"event_time_us": UPPER_US}, id="event_time-skew-via-offset"
    ),
    pytest.param(record(event_time=js("2023-11-14T22:13:20Z")), {"event_time_us": NOW_US}, id="event_time-now"),
    pytest.param(
        record(event_time=js("2023-11-14t22:13:20z")), {"event_time_us": NOW_US}, id="event_time-lowercase-t-z"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20+00:00")), {"event_time_us": NOW_US}, id="event_time-plus-zero"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20-00:00")), {"event_time_us": NOW_US}, id="event_time-minus-zero"
    ),
    pytest.param(
        record(event_time=js("2023-11-15T03:43:20+05:30")), {"event_time_us": NOW_US}, id="event_time-offset-plus-0530"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T14:13:20-08:00")), {"event_time_us": NOW_US}, id="event_time-offset-minus-0800"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20+23:59")),
        {"event_time_us": NOW_US - (23 * 60 + 59) * 60_000_000},
        id="event_time-offset-plus-2359",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20.1Z")),
        {"event_time_us": NOW_US + 100_000},
        id="event_time-1-fraction-digit",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20.123Z")), {"event_time_us": NOW_US + 123_000}, id="event_time-millis"
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20.123456Z")),
        {"event_time_us": NOW_US + 123_456},
        id="event_time-micros",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20.1234569Z")),
        {"event_time_us": NOW_US + 123_456},
        id="event_time-7-digits-truncated",
    ),
    pytest.param(
        record(event_time=js("2023-11-14T22:13:20." + "9" * 30 + "Z")),
        {"event_time_us": NOW_US + 999_999},
        id="event_time-30-digits-truncated",
    ),
    pytest.param(
        record(event_time=js("2016-12-31T23:59:60Z")),
        {"event_time_us": 1_483_228_800_000_000},
        id="event_time-leap-second",
    ),
    pytest.param(
        record(event_time=js("2016-12-31T23:59:60.5Z")),
        {"event_time_us": 1_483_228_800_500_000},
        id="event_time-leap-second-fraction",
    ),
    pytest.param(
        record(event_time=js("2020-02-29T00:00:00Z")),
        {"event_time_us": 1_582_934_400_000_000},
        id="event_time-feb-29-leap-year",
    ),
    pytest.param(
        record(event_time=js("2000-02-29T12:00:00Z")),
        {"event_time_us": 951_825_600_000_000},
        id="event_time-feb-29-2000",
    ),
    # event_time: epoch milliseconds
    pytest.param(record(event_time="946684800000"), {"event_time_us": MIN_US}, id="event_time-ms-min-inclusive"),
    pytest.param(record(event_time="1700000000000"), {"event_time_us": NOW_US}, id="event_time-ms"),
    pytest.param(
        record(event_time=str(UPPER_US // 1000)), {"event_time_us": UPPER_US}, id="event_time-ms-skew-inclusive"
    ),
    pytest.param(record(event_time="1.7e12"), {"event_time_us": NOW_US}, id="event_time-integral-float-exponent"),
    pytest.param(record(event_time="1700000000000.0"), {"event_time_us": NOW_US}, id="event_time-integral-float-point"),
    pytest.param(
        record(event_time="17000000000000e-1"), {"event_time_us": NOW_US}, id="event_time-integral-float-neg-exp"
    ),
    # page
    pytest.param(record(page=DROP), {"page": None, "key": None}, id="page-absent"),
    pytest.param(record(page="null"), {"page": None, "key": None}, id="page-null"),
    pytest.param(record(page=js("")), {"page": "", "key": ""}, id="page-empty"),
    pytest.param(record(page=js("/home")), {"page": "/home", "key": "/home"}, id="page-key-by-default"),
    pytest.param(record(page=js("p" * 2048)), {"page": "p" * 2048, "key": "p" * 2048}, id="page-2048-chars"),
    pytest.param(record(page=js("€" * 2048)), {"page": "€" * 2048, "key": "€" * 2048}, id="page-2048-three-byte-chars"),
    # value
    pytest.param(record(value=DROP), {"value": 0}, id="value-absent-is-0"),
    pytest.param(record(value="0"), {"value": 0}, id="value-0"),
    pytest.param(record(value="-3"), {"value": -3}, id="value-negative-int"),
    pytest.param(record(value="2.5"), {"value": 2.5}, id="value-float"),
    pytest.param(record(value="1.0"), {"value": 1.0}, id="value-integral-float-stays-float"),
    pytest.param(record(value="-0.0"), {"value": -0.0}, id="value-negative-zero"),
    pytest.param(record(value="1e308"), {"value": 1e308}, id="value-1e308"),
    pytest.param(record(value="1.7976931348623157e308"), {"value": 1.7976931348623157e308}, id="value-max-double"),
    pytest.param(record(value="-1.7976931348623157e308"), {"value": -1.7976931348623157e308}, id="value-min-double"),
    pytest.param(record(value="5e-324"), {"value": 5e-324}, id="value-min-subnormal"),
    pytest.param(record(value="1e-400"), {"value": 0.0}, id="value-underflow-to-zero"),
    pytest.param(record(value="9223372036854775807"), {"value": 2**63 - 1}, id="value-int64-max"),
    pytest.param(record(value="-9223372036854775808"), {"value": -(2**63)}, id="value-int64-min"),
    pytest.param(record(value="18446744073709551617"), {"value": 2**64 + 1}, id="value-int-beyond-64-bit-kept-exact"),
    pytest.param(record(value="-9223372036854775809"), {"value": -(2**63) - 1}, id="value-int-below-int64-kept-exact"),
    pytest.param(record(value="9" * 308), {"value": int("9" * 308)}, id="value-int-308-digits"),
    pytest.param(
        record(value=str(int(1.7976931348623157e308))),
        {"value": int(1.7976931348623157e308)},
        id="value-int-exactly-max-double",
    ),
    # properties
    pytest.param(record(properties=DROP), {"properties": None}, id="properties-absent"),
    pytest.param(record(properties="{}"), {"properties": {}}, id="properties-empty"),
    pytest.param(record(properties='{"a":"1","b":""}'), {"properties": {"a": "1", "b": ""}}, id="properties-strings"),
    pytest.param(
        record(properties=js({"ключ": "значение", "": "😀"})),
        {"properties": {"ключ": "значение", "": "😀"}},
        id="properties-unicode",
    ),
    pytest.param(record(properties='{"k":"a","k":"b"}'), {"properties": {"k": "b"}}, id="properties-duplicate-key"),
    # forward compatibility: anything else is ignored
    pytest.param(record(extra='[1,{"x":null},true,"s"]', schema_version="2"), {}, id="extras-ignored"),
    pytest.param(record(extra="1e999"), {}, id="extra-overflowing-number-ignored"),
    pytest.param(record(extra="9" * 5000), {}, id="extra-int-5000-digits-ignored"),
    pytest.param(record(extra="[" * 500 + "]" * 500), {}, id="extra-nesting-500-ignored"),
    pytest.param(record(extra="[" * 500 + "1e999" + "]" * 500), {}, id="extra-nesting-500-with-overflow-ignored"),
    pytest.param(record(Event_ID="5", EVENT_TYPE="null"), {}, id="field-names-are-case-sensitive"),
    pytest.param(
        b'{"event_id":5,"event_id":"e-1","event_type":"click","user_id":"u-1","event_time":"'
        + BASE_TIME.encode()
        + b'"}',
        {},
        id="duplicate-key-last-wins",
    ),
    pytest.param(b" \r\n\t" + record() + b"\n\n", {}, id="json-whitespace-around"),
    pytest.param(record().replace(b",", b" ,\n "), {}, id="json-whitespace-inside"),
]


@pytest.mark.parametrize(("payload", "expected"), VALID)
def test_valid_events(payload: bytes, expected: dict[str, Any]) -> None:
    event = assert_valid(run(payload))
    want = {
        "event_id": "e-1",
        "event_type": "click",
        "user_id": "u-1",
        "event_time_us": BASE_TIME_US,
        "page": None,
        "value": 0,
        "properties": None,
        "key": None,
        "payload": payload,
        "source": "test-source",
        "metadata": {"offset": 7},
    }
    want.update(expected)
    assert {name: getattr(event, name) for name in want} == want
    assert type(event.value) is type(want["value"])  # ints stay ints, floats stay floats
    if isinstance(want["value"], float):
        assert str(event.value) == str(want["value"])  # -0.0 stays -0.0


def test_valid_event_time_is_int_microseconds() -> None:
    for literal in ("1.7e12", "1700000000000", js("2023-11-14T22:13:20.5Z")):
        event = assert_valid(run(record(event_time=literal)))
        assert type(event.event_time_us) is int


# ---------------------------------------------------------------------------------------------------------------
# The clock: injected, read per record, skew configurable.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("skew_s", "offset_us", "valid"),
    [
        pytest.param(0, 0, True, id="skew-0-at-now"),
        pytest.param(0, 1, False, id="skew-0-now-plus-1us"),
        pytest.param(3600, 3_600_000_000, True, id="skew-1h-inclusive"),
        pytest.param(3600, 3_600_000_001, False, id="skew-1h-plus-1us"),
        pytest.param(0.5, 500_000, True, id="skew-half-second-inclusive"),
        pytest.param(0.5, 500_001, False, id="skew-half-second-plus-1us"),
        pytest.param(86400, -(10**15), False, id="far-past-is-before-2000"),
    ],
)
def test_max_clock_skew(skew_s: float, offset_us: int, valid: bool) -> None:
    from transforms.timefmt import format_rfc3339_us

    payload = record(event_time=js(format_rfc3339_us(NOW_US + offset_us)))
    result = run(payload, max_clock_skew_s=skew_s)
    if valid:
        assert assert_valid(result).event_time_us == NOW_US + offset_us
    else:
        assert_rejected(result, dl.TIMESTAMP_OUT_OF_RANGE, "event_time")


def test_clock_is_read_for_every_record() -> None:
    now = [NOW_US]
    validator = EventValidator(clock=lambda: now[0])
    payload = record(event_time=js("2023-11-16T00:00:00Z"))  # ~25.8 h after NOW_US
    rec = SourceRecord(payload, "s")
    obj = decode_json(payload)
    assert_rejected(validator.validate(obj, rec), dl.TIMESTAMP_OUT_OF_RANGE, "event_time")
    now[0] += 2 * 3600 * 1_000_000
    assert_valid(validator.validate(obj, rec))


def test_upper_bound_depends_on_processing_time_not_on_lower_bound() -> None:
    # A clock before 2000 leaves no valid event time at all.
    result = run(record(event_time=js("2000-01-01T00:00:00Z")), clock=lambda: MIN_US - SKEW_US - 1)
    assert_rejected(result, dl.TIMESTAMP_OUT_OF_RANGE, "event_time")
    assert_valid(run(record(event_time=js("2000-01-01T00:00:00Z")), clock=lambda: MIN_US - SKEW_US))


# ---------------------------------------------------------------------------------------------------------------
# --key_field: an event field, properties.<name> or any other top-level field.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key_field", "payload", "key"),
    [
        pytest.param("page", record(page=js("/a")), "/a", id="page"),
        pytest.param("user_id", record(), "u-1", id="user_id"),
        pytest.param("event_type", record(), "click", id="event_type"),
        pytest.param("properties.country", record(properties='{"country":"NZ"}'), "NZ", id="property"),
        pytest.param("properties.country", record(properties='{"city":"X"}'), None, id="property-missing"),
        pytest.param("properties.country", record(), None, id="properties-absent"),
        pytest.param("tenant", record(tenant=js("acme")), "acme", id="extra-string"),
        pytest.param("tenant", record(), None, id="extra-missing"),
        pytest.param("tenant", record(tenant="null"), None, id="extra-null"),
        pytest.param("tenant", record(tenant="7"), "7", id="extra-int"),
        pytest.param("tenant", record(tenant="true"), "true", id="extra-bool"),
        pytest.param("tenant", record(tenant='{"b":1,"a":[1.5,null]}'), '{"b":1,"a":[1.5,null]}', id="extra-object"),
        pytest.param("tenant", record(tenant="9223372036854775807"), "9223372036854775807", id="extra-int64-max"),
        pytest.param("tenant", record(tenant="9" * 400), "9" * 400, id="extra-int-400-digits"),
        pytest.param("tenant", record(tenant="[" * 300 + "]" * 300), "[" * 300 + "]" * 300, id="extra-nesting-300"),
        # An integer of more than 4300 digits cannot be turned into text by Python: no usable key (never a crash).
        pytest.param("tenant", record(tenant="9" * 5000), None, id="extra-int-5000-digits"),
    ],
)
def test_key_field(key_field: str, payload: bytes, key: str | None) -> None:
    assert assert_valid(run(payload, key_field=key_field)).key == key


def test_key_field_does_not_affect_validation() -> None:
    result = run(record(page="5"), key_field="user_id")
    assert_rejected(result, dl.INVALID_TYPE, "page")


def test_arrival_time_passes_through_validation() -> None:
    rec = SourceRecord(record(), "s", None)
    event = assert_valid(EventValidator(clock=lambda: NOW_US).validate(decode_json(rec.payload), rec, 123_456))
    assert event.arrival_us == 123_456
