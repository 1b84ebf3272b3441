"""Property tests: every input has exactly one outcome (a valid Event or one Rejection with a contract code), the
decoders and the validator never raise, and the outcome is deterministic. JSON and Avro.

Structured inputs (valid events with random mutations) are also checked against ``reference_outcome``, an
independent re-statement of the contract's field rules and their field-major order.

Reproducible in CI: every test is derandomized (fixed seed per test) and uses no example database.
"""

from __future__ import annotations

import io
import json
import math
import string
from datetime import datetime, timedelta, timezone
from typing import Any

import fastavro
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import schemas
from transforms import dead_letter as dl
from transforms.dead_letter import Rejection
from transforms.parse import decoder_for, parse_record
from transforms.records import Event, SourceRecord
from transforms.timefmt import parse_rfc3339_us
from transforms.validate import EventValidator

NOW_US = 1_700_000_000_000_000  # fixed processing time: 2023-11-14T22:13:20Z
SKEW_US = 86_400 * 1_000_000
MIN_US = 946_684_800_000_000
MAX_PAYLOAD = 64 * 1024
MAX_DOUBLE = 1.7976931348623157e308

VALIDATOR = EventValidator(clock=lambda: NOW_US)
KEYED_VALIDATOR = EventValidator(key_field="tenant", clock=lambda: NOW_US)

PARSE_CODES = {
    dl.PAYLOAD_TOO_LARGE,
    dl.INVALID_ENCODING,
    dl.MALFORMED_JSON,
    dl.MALFORMED_AVRO,
    dl.INCOMPATIBLE_SCHEMA,
    dl.NOT_AN_OBJECT,
}
FIELD_CODES = {dl.MISSING_FIELD, dl.INVALID_TYPE, dl.INVALID_VALUE, dl.TIMESTAMP_OUT_OF_RANGE}
FIELDS = ("event_id", "event_type", "user_id", "event_time", "page", "value", "properties")
NOT_FOR = {
    "json": {dl.MALFORMED_AVRO, dl.INCOMPATIBLE_SCHEMA},
    "avro": {dl.MALFORMED_JSON, dl.NOT_AN_OBJECT, dl.INCOMPATIBLE_SCHEMA},
    "confluent-avro": {dl.MALFORMED_JSON, dl.NOT_AN_OBJECT},
}

PROPERTY = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---------------------------------------------------------------------------------------------------------------
# The system under test, and the one-outcome invariants.
# ---------------------------------------------------------------------------------------------------------------


def outcome(payload: bytes, fmt: str, validator: EventValidator = VALIDATOR) -> tuple[str, Event | Rejection]:
    """(stage, result), exactly as the pipeline chains parse and validate. Any exception fails the test."""
    record = SourceRecord(payload, "property", {"n": 1})
    decoded = parse_record(record, decoder_for(fmt), MAX_PAYLOAD)
    if type(decoded) is Rejection:
        return "parse", decoded
    assert type(decoded) is dict, f"decoder returned {type(decoded).__name__}"
    return "validate", validator.validate(decoded, record)


def check_one_outcome(payload: bytes, fmt: str, validator: EventValidator = VALIDATOR) -> Event | Rejection:
    stage, result = outcome(payload, fmt, validator)
    if type(result) is Event:
        assert stage == "validate"
        check_event_meets_contract(result, payload)
    else:
        assert type(result) is Rejection, f"neither an Event nor a Rejection: {type(result)!r}"
        assert isinstance(result.message, str) and result.message
        if stage == "parse":
            assert result.code in PARSE_CODES - NOT_FOR[fmt], result
            assert result.field is None
        else:
            assert result.code in FIELD_CODES, result
            assert result.field in FIELDS, result
    # deterministic: the same bytes again give the same outcome
    assert outcome(payload, fmt, validator) == (stage, result)
    return result


def check_event_meets_contract(event: Event, payload: bytes) -> None:
    assert type(event.event_id) is str and 1 <= len(event.event_id) <= 128
    assert type(event.event_type) is str and is_event_type(event.event_type)
    assert type(event.user_id) is str and 1 <= len(event.user_id) <= 256
    assert type(event.event_time_us) is int and MIN_US <= event.event_time_us <= NOW_US + SKEW_US
    assert event.page is None or (type(event.page) is str and len(event.page) <= 2048)
    assert type(event.value) in (int, float) and math.isfinite(event.value) and abs(event.value) <= MAX_DOUBLE
    assert event.properties is None or (
        type(event.properties) is dict and all(type(k) is str and type(v) is str for k, v in event.properties.items())
    )
    for text in (event.event_id, event.event_type, event.user_id, event.page or "", *(event.properties or {}).items()):
        "".join(text).encode("utf-8")  # real Unicode text: no lone surrogates
    assert event.payload == payload and event.source == "property"


def is_event_type(text: str) -> bool:
    lower = set(string.ascii_lowercase)
    return 1 <= len(text) <= 64 and text[0] in lower and all(c in lower or c in "0123456789_" for c in text)


# ---------------------------------------------------------------------------------------------------------------
# An independent statement of the field rules: (code, field) or the expected Event fields.
# ---------------------------------------------------------------------------------------------------------------


def reference_outcome(obj: dict[str, Any]) -> tuple[str, str] | dict[str, Any]:
    for name, limit in (("event_id", 128), ("event_type", 64), ("user_id", 256)):
        if name not in obj:
            return dl.MISSING_FIELD, name
        value = obj[name]
        if not isinstance(value, str):
            return dl.INVALID_TYPE, name
        if not 1 <= len(value) <= limit or (name == "event_type" and not is_event_type(value)):
            return dl.INVALID_VALUE, name
    if "event_time" not in obj:
        return dl.MISSING_FIELD, "event_time"
    when = obj["event_time"]
    if isinstance(when, bool) or not isinstance(when, (str, int, float)):
        return dl.INVALID_TYPE, "event_time"
    if isinstance(when, str):
        us = parse_rfc3339_us(when)  # the grammar itself is covered by test_timefmt.py
        if us is None:
            return dl.INVALID_VALUE, "event_time"
    elif isinstance(when, float):
        if not math.isfinite(when) or when != math.floor(when):
            return dl.INVALID_VALUE, "event_time"
        us = int(when) * 1000
    else:
        us = when * 1000
    if not MIN_US <= us <= NOW_US + SKEW_US:
        return dl.TIMESTAMP_OUT_OF_RANGE, "event_time"
    page = obj.get("page")
    if page is not None and not isinstance(page, str):
        return dl.INVALID_TYPE, "page"
    if page is not None and len(page) > 2048:
        return dl.INVALID_VALUE, "page"
    value = obj.get("value", 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return dl.INVALID_TYPE, "value"
    if not math.isfinite(value) or abs(value) > MAX_DOUBLE:
        return dl.INVALID_VALUE, "value"
    props = obj.get("properties")
    bad_props = not isinstance(props, dict) or not all(isinstance(v, str) for v in props.values())
    if "properties" in obj and bad_props:
        return dl.INVALID_TYPE, "properties"
    return {
        "event_id": obj["event_id"],
        "event_type": obj["event_type"],
        "user_id": obj["user_id"],
        "event_time_us": us,
        "page": page,
        "value": value,
        "properties": props,
        "key": page,
    }


def check_against_reference(result: Event | Rejection, obj: dict[str, Any]) -> None:
    expected = reference_outcome(obj)
    if isinstance(expected, tuple):
        assert type(result) is Rejection and (result.code, result.field) == expected, (result, expected)
    else:
        assert type(result) is Event, (result, expected)
        assert {name: getattr(result, name) for name in expected} == expected
        assert type(result.value) is type(expected["value"])  # ints stay ints, floats stay floats


# ---------------------------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------------------------

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Inside the valid range (with any offset); the boundaries and the outside come from explicit values below.
LOW = datetime(2000, 1, 2)
HIGH = datetime(2023, 11, 13)


@st.composite
def rfc3339(draw: st.DrawFn) -> str:
    local = draw(st.datetimes(min_value=LOW, max_value=HIGH))
    offset = draw(st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59) | st.just(0))
    digits = draw(st.integers(min_value=0, max_value=9))
    fraction = f".{local.microsecond:06d}{draw(st.integers(0, 999)):03d}"[: digits + 1] if digits else ""
    if offset == 0 and draw(st.booleans()):
        zone = draw(st.sampled_from(["Z", "z"]))
    else:
        zone = f"{'-' if offset < 0 else '+'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    return f"{local:%Y-%m-%d}{draw(st.sampled_from('Tt'))}{local:%H:%M:%S}{fraction}{zone}"


def boundary_ms() -> st.SearchStrategy[int]:
    upper = (NOW_US + SKEW_US) // 1000
    return st.sampled_from([MIN_US // 1000 - 1, MIN_US // 1000, upper, upper + 1, 0, -1, 2**63 - 1])


EVENT_TIMES = st.one_of(
    rfc3339(),
    st.integers(min_value=MIN_US // 1000, max_value=(NOW_US + SKEW_US) // 1000),
    boundary_ms(),
    boundary_ms().map(float),
    st.sampled_from(["2000-01-01T00:00:00Z", "1999-12-31T23:59:59.999Z", "2023-11-15T22:13:20Z"]),
    st.sampled_from(["2023-11-15T22:13:20.000001Z", "2023-02-30T00:00:00Z", "2023-11-14 22:00:00Z"]),
)
SIZED_TEXT = st.builds(
    lambda char, size: char * size,
    st.sampled_from(["a", "é", "😀", "\u0301"]),
    st.sampled_from([0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257, 2047, 2048, 2049]),
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    SIZED_TEXT,
    st.sampled_from(["click\n", "Click", "1700000000000", "", " ", "\x00", "ö", "2023-11-14T22:00:00"]),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=10,
)
VALID_FIELDS = {
    "event_id": st.text(min_size=1, max_size=128),
    "event_type": st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
    "user_id": st.text(min_size=1, max_size=256),
    "event_time": EVENT_TIMES,
    "page": st.none() | st.text(max_size=40),
    "value": st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=False, allow_infinity=False),
    "properties": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
}
OPTIONAL = {"page", "value", "properties"}


@st.composite
def near_valid_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event (optional fields present or not), then 0-3 of its fields mutated, plus extra fields."""
    obj: dict[str, Any] = {}
    for name, valid in VALID_FIELDS.items():
        if name not in OPTIONAL or draw(st.integers(min_value=0, max_value=3)):  # optional fields: 3 in 4
            obj[name] = draw(valid)
    # mostly one fault (each field alike); sometimes none, or two or three to exercise the precedence
    for name in draw(st.permutations(FIELDS))[: draw(st.sampled_from([1, 0, 1, 2, 1, 3]))]:
        mutation = draw(st.sampled_from(["any", "sized", "null", "nested", "drop"]))
        if mutation == "drop":
            obj.pop(name, None)
        elif mutation == "null":
            obj[name] = None
        elif mutation == "any":
            obj[name] = draw(JSON_VALUES)
        elif mutation == "sized":
            obj[name] = draw(SIZED_TEXT)
        else:
            obj[name] = nest(draw(VALID_FIELDS[name]), draw(st.integers(min_value=1, max_value=40)))
    for extra in draw(st.lists(st.text(min_size=1, max_size=6).filter(lambda k: k not in FIELDS), max_size=3)):
        obj[extra] = draw(JSON_VALUES)
    return obj


def nest(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def to_json(obj: Any, ascii_only: bool) -> bytes:
    return json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8")


def with_raw_literal(obj: dict[str, Any], field: str, literal: str) -> bytes:
    """``obj`` as JSON with ``field``'s value replaced by ``literal`` spliced in as is (not a JSON string)."""
    return to_json({**obj, field: "@@RAW@@"}, False).replace(b'"@@RAW@@"', literal.encode())


# Raw JSON text that has no Python/json.dumps equivalent, spliced in place of a field's value.
RAW_LITERALS = st.sampled_from(
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e999",
        '"\\ud800"',
        '"\\udfff"',
        '"\\ud83d\\ude00"',
        "9" * 5000,
        "-" + "9" * 5000,
        "1" + "0" * 20,
        "18446744073709551617",
        "1.7e12",
        "[" * 300 + "]" * 300,
        "[" * 700 + "1e999" + "]" * 700,
        "[" * 900 + '"\\ud800"' + "]" * 900,
        "[" * 1100 + "]" * 1100,
        '{"a":' * 600 + "1" + "}" * 600,
        "[" * 20000 + "]" * 20000,
        "tru",
        "nul",
        "01",
        "1.",
        '"\\u00"',
    ]
)
BAD_UTF8 = st.sampled_from([b"\xff", b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\xfe"])


# ---------------------------------------------------------------------------------------------------------------
# Properties: arbitrary bytes.
# ---------------------------------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=2500)
@given(st.binary(max_size=400))
def test_any_bytes_as_json_has_one_outcome(payload: bytes) -> None:
    result = check_one_outcome(payload, "json")
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        assert type(result) is Rejection and result.code == dl.INVALID_ENCODING
    else:
        assert not (type(result) is Rejection and result.code == dl.INVALID_ENCODING)


@settings(PROPERTY, max_examples=2500)
@given(st.binary(max_size=400))
def test_any_bytes_as_avro_has_one_outcome(payload: bytes) -> None:
    check_one_outcome(payload, "avro")


@settings(PROPERTY, max_examples=300)
@given(
    st.binary(max_size=200),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=MAX_PAYLOAD - 2, max_value=MAX_PAYLOAD + 2),
    st.sampled_from(["json", "avro"]),
)
def test_size_limit_wins_for_any_bytes(prefix: bytes, fill: int, size: int, fmt: str) -> None:
    payload = (prefix + bytes([fill]) * size)[:size]
    result = check_one_outcome(payload, fmt)
    assert (type(result) is Rejection and result.code == dl.PAYLOAD_TOO_LARGE) == (len(payload) > MAX_PAYLOAD)


# ---------------------------------------------------------------------------------------------------------------
# Properties: near-valid JSON.
# ---------------------------------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=1200)
@given(near_valid_objects(), st.booleans())
def test_near_valid_json_objects_follow_the_contract(obj: dict[str, Any], ascii_only: bool) -> None:
    payload = to_json(obj, ascii_only)
    assume(len(payload) <= MAX_PAYLOAD)
    result = check_one_outcome(payload, "json")
    check_against_reference(result, obj)


@settings(PROPERTY, max_examples=400)
@given(near_valid_objects(), st.sampled_from([*FIELDS, "tenant", "extra"]), RAW_LITERALS)
def test_raw_json_literal_splices_have_one_outcome(obj: dict[str, Any], field: str, literal: str) -> None:
    payload = with_raw_literal(obj, field, literal)
    assume(len(payload) <= MAX_PAYLOAD)
    result = check_one_outcome(payload, "json")
    check_one_outcome(payload, "json", KEYED_VALIDATOR)  # an extra field as the key never breaks validation
    if literal in ("NaN", "Infinity", "-Infinity", '"\\ud800"', '"\\udfff"', "tru", "nul", "01", "1.", '"\\u00"'):
        assert (result.code, result.field) == (dl.MALFORMED_JSON, None)
    if literal.startswith("[" * 900) and "ud800" in literal:
        assert (result.code, result.field) == (dl.MALFORMED_JSON, None)


@settings(PROPERTY, max_examples=600)
@given(near_valid_objects(), st.data())
def test_byte_mutations_of_json_have_one_outcome(obj: dict[str, Any], data: st.DataObject) -> None:
    payload = to_json(obj, data.draw(st.booleans()))
    assume(len(payload) <= MAX_PAYLOAD)
    position = data.draw(st.integers(min_value=0, max_value=len(payload)))
    kind = data.draw(st.sampled_from(["bad-utf8", "truncate", "insert", "delete", "flip"]))
    if kind == "bad-utf8":
        mutated = payload[:position] + data.draw(BAD_UTF8) + payload[position:]
    elif kind == "truncate":
        mutated = payload[:position]
    elif kind == "insert":
        mutated = payload[:position] + bytes([data.draw(st.integers(0, 255))]) + payload[position:]
    elif kind == "delete":
        mutated = payload[:position] + payload[position + 1 :]
    else:
        index = min(position, len(payload) - 1)
        mutated = payload[:index] + bytes([payload[index] ^ (1 << data.draw(st.integers(0, 7)))]) + payload[index + 1 :]
    result = check_one_outcome(mutated, "json")
    if kind == "bad-utf8":
        assert (result.code, result.field) == (dl.INVALID_ENCODING, None)
    if kind == "truncate" and position < len(payload):
        assert type(result) is Rejection and result.field is None  # a cut object is never well-formed JSON


# ---------------------------------------------------------------------------------------------------------------
# Properties: Avro.
# ---------------------------------------------------------------------------------------------------------------

AVRO_SCHEMA = schemas.event_avro_schema()
AVRO_FIELDS = {
    "event_id": st.text(max_size=130) | SIZED_TEXT,
    "event_type": st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True) | st.text(max_size=66) | SIZED_TEXT,
    "user_id": st.text(max_size=258) | SIZED_TEXT,
    "event_time": EVENT_TIMES.filter(lambda t: not isinstance(t, float))
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.text(max_size=30),
    "page": st.none() | st.text(max_size=40) | SIZED_TEXT,
    "value": st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats(),
    "properties": st.none() | st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=4),
}


def to_avro(obj: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, AVRO_SCHEMA, obj)
    return out.getvalue()


def without_avro_nulls(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not (k in ("value", "properties") and v is None)}


@settings(PROPERTY, max_examples=1000)
@given(st.fixed_dictionaries(AVRO_FIELDS))
def test_avro_records_follow_the_contract(obj: dict[str, Any]) -> None:
    payload = to_avro(obj)
    result = check_one_outcome(payload, "avro")
    check_against_reference(result, without_avro_nulls(obj))


@settings(PROPERTY, max_examples=1000)
@given(st.fixed_dictionaries(AVRO_FIELDS), st.data())
def test_byte_mutations_of_avro_have_one_outcome(obj: dict[str, Any], data: st.DataObject) -> None:
    payload = to_avro(obj)
    position = data.draw(st.integers(min_value=0, max_value=len(payload)))
    kind = data.draw(st.sampled_from(["truncate", "append", "insert", "delete", "flip", "bad-utf8"]))
    if kind == "truncate":
        mutated = payload[:position]
    elif kind == "append":
        mutated = payload + data.draw(st.binary(min_size=1, max_size=8))
    elif kind == "insert":
        mutated = payload[:position] + data.draw(st.binary(min_size=1, max_size=4)) + payload[position:]
    elif kind == "delete":
        mutated = payload[:position] + payload[position + 1 :]
    elif kind == "bad-utf8":
        mutated = payload[:position] + data.draw(BAD_UTF8) + payload[position:]
    else:
        index = min(position, len(payload) - 1)
        mutated = payload[:index] + bytes([payload[index] ^ (1 << data.draw(st.integers(0, 7)))]) + payload[index + 1 :]
    result = check_one_outcome(mutated, "avro")
    if kind == "truncate" and position < len(payload):
        assert (result.code, result.field) == (dl.MALFORMED_AVRO, None)  # every field must be read: a cut record fails
    if kind == "append":
        assert type(result) is Rejection and result.field is None  # trailing bytes


# ---------------------------------------------------------------------------------------------------------------
# Properties: Confluent wire format, both shipped schema ids (2 = a newer writer with an added optional field).
# ---------------------------------------------------------------------------------------------------------------

AVRO_V2 = schemas.confluent_schemas()[2]


@settings(PROPERTY, max_examples=1500)
@given(st.binary(max_size=400), st.sampled_from([b"", b"\x00\x00\x00\x00\x01", b"\x00\x00\x00\x00\x02"]))
def test_any_bytes_as_confluent_avro_has_one_outcome(payload: bytes, header: bytes) -> None:
    check_one_outcome(header + payload, "confluent-avro")


@settings(PROPERTY, max_examples=800)
@given(st.fixed_dictionaries(AVRO_FIELDS), st.sampled_from([1, 2]), st.none() | st.text(max_size=12))
def test_confluent_records_of_either_schema_id_follow_the_contract(
    obj: dict[str, Any], schema_id: int, session_id: str | None
) -> None:
    if schema_id == 1:
        body = to_avro(obj)
    else:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, AVRO_V2, {**obj, "session_id": session_id})
        body = out.getvalue()
    result = check_one_outcome(b"\x00" + schema_id.to_bytes(4, "big") + body, "confluent-avro")
    check_against_reference(result, without_avro_nulls(obj))


# ---------------------------------------------------------------------------------------------------------------
# The strategies really reach every code (a guard against a property that passes by never getting there).
# ---------------------------------------------------------------------------------------------------------------


def test_strategies_reach_every_code() -> None:
    seen: set[str] = set()

    @settings(max_examples=600, deadline=None, derandomize=True, database=None)
    @given(near_valid_objects())
    def collect(obj: dict[str, Any]) -> None:
        stage, result = outcome(to_json(obj, False), "json")
        seen.add("valid" if type(result) is Event else f"{result.code}/{result.field}")

    collect()
    for field in FIELDS:
        assert any(code.endswith("/" + field) for code in seen), (field, sorted(seen))
    for code in FIELD_CODES:
        assert any(item.startswith(code + "/") for item in seen), (code, sorted(seen))
    assert "valid" in seen


def test_reference_agrees_on_hand_picked_objects() -> None:
    base = {"event_id": "e", "event_type": "click", "user_id": "u", "event_time": "2023-11-14T22:00:00Z"}
    assert reference_outcome({}) == (dl.MISSING_FIELD, "event_id")
    assert reference_outcome({**base, "event_id": 5, "user_id": None}) == (dl.INVALID_TYPE, "event_id")
    assert reference_outcome({**base, "event_time": 0, "page": 5}) == (dl.TIMESTAMP_OUT_OF_RANGE, "event_time")
    assert reference_outcome({**base, "value": True}) == (dl.INVALID_TYPE, "value")
    assert reference_outcome({**base, "properties": {"a": 1}}) == (dl.INVALID_TYPE, "properties")
    assert reference_outcome({**base, "event_type": "click\n"}) == (dl.INVALID_VALUE, "event_type")
    expected = reference_outcome(base)
    assert isinstance(expected, dict) and expected["event_time_us"] == NOW_US - 800 * 1_000_000
    assert (EPOCH + timedelta(microseconds=expected["event_time_us"])).isoformat() == "2023-11-14T22:00:00+00:00"
