"""The JSON fast path against the reference: differential tests on generated and hand-picked records.

The fast path (``transforms/fast_json.py``) may only ever *accept* a record, and then with exactly the Event the
reference (``decode_json`` + ``EventValidator``) gives it: same fields, same types (an int value stays an int).
Everything else it leaves to the reference. ``BatchParser`` chains the two; its outcome per record (the Event,
or stage + code + field + message) must be the reference's for any input.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.test_property_one_outcome import (
    BAD_UTF8,
    FIELDS,
    MAX_PAYLOAD,
    NOW_US,
    PROPERTY,
    RAW_LITERALS,
    near_valid_objects,
    rfc3339,
    to_json,
)
from transforms import dead_letter as dl
from transforms.batched import BatchParser
from transforms.dead_letter import Rejection
from transforms.fast_json import FastJsonValidator, event_of
from transforms.io.synthetic import generate, parse_synthetic_uri
from transforms.parse import decode_json, parse_record
from transforms.records import Event, RecordBatch, SourceRecord
from transforms.validate import EventValidator

SOURCE = "test-source"
KEY_FIELDS = ["page", "user_id", "event_id", "event_type", "properties.country", "tenant"]


def reference(payload: bytes, key_field: str = "page") -> tuple[str, Event | Rejection]:
    record = SourceRecord(payload, SOURCE)
    decoded = parse_record(record, decode_json, MAX_PAYLOAD)
    if type(decoded) is Rejection:
        return dl.STAGE_PARSE, decoded
    return dl.STAGE_VALIDATE, EventValidator(key_field, clock=lambda: NOW_US).validate(decoded, record)


def same_event(got: Event, expected: Event) -> bool:
    """Equal and of the same types field by field (1 == 1.0 and {} == {} hide differences Beam would show)."""
    return got == expected and all(type(a) is type(b) for a, b in zip(got, expected, strict=True))


def check_fast_path(payloads: list[bytes], key_field: str = "page") -> int:
    """Every record the fast path accepts is the reference's Event; returns how many it accepted."""
    fast = FastJsonValidator(key_field, max_payload_bytes=MAX_PAYLOAD, clock=lambda: NOW_US)
    accepted, rest = fast.validate_batch(payloads)
    assert sorted([valid[0] for valid in accepted] + rest) == list(range(len(payloads)))
    for valid in accepted:
        payload = payloads[valid[0]]
        stage, expected = reference(payload, key_field)
        assert type(expected) is Event, (payload, expected)
        got = event_of(valid, payload, SOURCE)
        assert same_event(got, expected), (payload, got, expected)
    return len(accepted)


def check_batch_parser(payloads: list[bytes], key_field: str = "page") -> None:
    """BatchParser (fast path + reference) gives every record exactly the reference's outcome."""
    parser = BatchParser("json", key_field, max_payload_bytes=MAX_PAYLOAD, clock=lambda: NOW_US)
    batch = RecordBatch(SOURCE, payloads)
    parsed, parse_rejects = parser.parse(batch)
    checked, validate_rejects = parser.validate(parsed)
    outcomes: dict[int, Any] = {i: (dl.STAGE_PARSE, r) for i, r in parse_rejects}
    outcomes.update({i: (dl.STAGE_VALIDATE, r) for i, r in validate_rejects})
    for valid in checked.valid:
        assert valid[0] not in outcomes
        outcomes[valid[0]] = (dl.STAGE_VALIDATE, event_of(valid, payloads[valid[0]], SOURCE))
    assert sorted(outcomes) == list(range(len(payloads)))
    assert [v[0] for v in checked.valid] == sorted(v[0] for v in checked.valid)  # batch order
    for i, payload in enumerate(payloads):
        stage, got = outcomes[i]
        expected_stage, expected = reference(payload, key_field)
        if type(expected) is Event:
            assert type(got) is Event and same_event(got, expected), (payload, got, expected)
        else:
            assert (stage, got) == (expected_stage, expected), payload  # code, field and message


# ---------------------------------------------------------------------------------------------------------------
# Valid records with everything a valid record may hold: the fast path must take them as the reference does.
# ---------------------------------------------------------------------------------------------------------------

TEXT = st.text(min_size=1, max_size=20) | st.sampled_from(
    ["é", "😀", "a\nb", 'q"uote', "back\\slash", "\x7f", "\u2028"]
)
VALID = {
    "event_id": TEXT | st.sampled_from(["x" * 128, "é" * 128, "😀" * 128]),
    "event_type": st.from_regex(r"[a-z][a-z0-9_]{0,63}", fullmatch=True),
    "user_id": TEXT | st.sampled_from(["u" * 256]),
    "event_time": rfc3339()
    | st.integers(min_value=946_684_800_000, max_value=1_700_000_000_000)
    | st.sampled_from(
        [
            "2000-01-01T00:00:00Z",
            "2023-11-14T22:00:00.5Z",
            "2023-11-14T22:00:00.123456789Z",
            "2016-12-31T23:59:60Z",
            "2023-11-14t22:00:00z",
            "2023-11-14T23:00:00+01:00",
            1.7e12,
            946684800000.0,
        ]
    ),
    "page": st.none() | TEXT | st.sampled_from(["p" * 2048, "é" * 2048]),
    "value": st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0, -0.0, 1e308, -1e308, 5e-324, 2**63, -(2**63) - 1, 10**30, 1.5, 1e2]),
    "properties": st.dictionaries(TEXT | st.just("country"), TEXT, max_size=5),
}
EXTRAS = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda k: k not in FIELDS),
    st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | TEXT, lambda x: st.lists(x, max_size=3)),
    max_size=3,
)


@st.composite
def valid_objects(draw: st.DrawFn) -> dict[str, Any]:
    obj = {name: draw(strategy) for name, strategy in VALID.items() if name in FIELDS[:4] or draw(st.booleans())}
    obj.update(draw(EXTRAS))
    if draw(st.booleans()):
        obj["tenant"] = draw(TEXT | st.integers() | st.none())
    return obj


def serialized(obj: dict[str, Any], style: str) -> bytes:
    if style == "compact":
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    if style == "ascii":
        return json.dumps(obj).encode()  # \\u escapes for every non-ASCII character
    return json.dumps(obj, ensure_ascii=False, indent=1).encode()  # whitespace and newlines between tokens


@settings(PROPERTY, max_examples=250)
@given(st.lists(st.tuples(valid_objects(), st.sampled_from(["compact", "ascii", "pretty"])), min_size=1, max_size=4),
       st.sampled_from(KEY_FIELDS))  # fmt: skip
def test_valid_records_fast_path_matches_reference(items: list, key_field: str) -> None:
    payloads = [serialized(obj, style) for obj, style in items]
    check_fast_path(payloads, key_field)
    check_batch_parser(payloads, key_field)


# ---------------------------------------------------------------------------------------------------------------
# Near-valid and broken records: whatever the fast path accepts is right, and the chain gives the reference outcome.
# ---------------------------------------------------------------------------------------------------------------


@settings(PROPERTY, max_examples=250)
@given(st.lists(st.tuples(near_valid_objects(), st.booleans()), min_size=1, max_size=4), st.sampled_from(KEY_FIELDS))
def test_near_valid_records_match_reference(items: list, key_field: str) -> None:
    payloads = [to_json(obj, ascii_only) for obj, ascii_only in items]
    check_fast_path(payloads, key_field)
    check_batch_parser(payloads, key_field)


@settings(PROPERTY, max_examples=300)
@given(valid_objects(), st.sampled_from([*FIELDS, "tenant", "extra"]), RAW_LITERALS)
def test_raw_literal_splices_match_reference(obj: dict[str, Any], field: str, literal: str) -> None:
    obj[field] = "@@RAW@@"
    payload = to_json(obj, False).replace(b'"@@RAW@@"', literal.encode())
    check_fast_path([payload])
    check_batch_parser([payload])


@settings(PROPERTY, max_examples=400)
@given(valid_objects(), st.data())
def test_byte_mutations_match_reference(obj: dict[str, Any], data: st.DataObject) -> None:
    payload = to_json(obj, data.draw(st.booleans()))
    position = data.draw(st.integers(min_value=0, max_value=len(payload)))
    kind = data.draw(st.sampled_from(["bad-utf8", "truncate", "insert", "delete", "flip", "duplicate-key"]))
    if kind == "bad-utf8":
        mutated = payload[:position] + data.draw(BAD_UTF8) + payload[position:]
    elif kind == "truncate":
        mutated = payload[:position]
    elif kind == "insert":
        mutated = payload[:position] + bytes([data.draw(st.integers(0, 255))]) + payload[position:]
    elif kind == "delete":
        mutated = payload[:position] + payload[position + 1 :]
    elif kind == "duplicate-key":  # JSON objects may repeat a name: the last one wins, in both paths
        name = data.draw(st.sampled_from(FIELDS))
        literal = json.dumps(data.draw(VALID[name] | st.none() | st.integers()))
        mutated = payload[:-1] + f',"{name}":{literal}}}'.encode()
    else:
        index = min(position, len(payload) - 1)
        mutated = payload[:index] + bytes([payload[index] ^ (1 << data.draw(st.integers(0, 7)))]) + payload[index + 1 :]
    check_fast_path([mutated, payload])
    check_batch_parser([mutated, payload])


# ---------------------------------------------------------------------------------------------------------------
# Hand-picked edges: the fast path declines them (or gets them right), and the chain gives the reference outcome.
# ---------------------------------------------------------------------------------------------------------------

BASE = '"event_id":"e","event_type":"click","user_id":"u","event_time":"2023-11-14T22:00:00.123456Z"'
EDGES = [
    b"{" + BASE.encode() + b"}",
    ("{" + BASE + ',"event_type":"click\\n"}').encode(),  # escaped newline: not the pattern
    ("{" + BASE + ',"x":"\\ud800"}').encode(),  # lone surrogate in an ignored field: malformed_json
    ("{" + BASE + ',"page":"\\ud83d\\ude00"}').encode(),  # a valid surrogate pair
    ("{" + BASE + ',"x":"\xff"}').encode("latin-1"),  # invalid UTF-8 in an ignored field: invalid_encoding
    ("{" + BASE + ',"value":18446744073709551617}').encode(),  # beyond 64 bits: the exact int
    ("{" + BASE + ',"value":1e400}').encode(),  # beyond the double range in JSON
    ("{" + BASE + ',"value":' + "9" * 400 + "}").encode(),  # an int beyond the double range
    ("{" + BASE + ',"value":true}').encode(),
    ("{" + BASE + ',"properties":null}').encode(),
    ("{" + BASE + ',"page":null,"value":-0.0}').encode(),
    ("{" + BASE.replace("22:00:00.123456Z", "22:00:00.1234567Z") + "}").encode(),  # truncated, not rounded
    ("{" + BASE.replace("22:00:00.123456Z", "22:00:00Z") + "}").encode(),
    ("{" + BASE.replace("22:00:00.123456Z", "22:00:60.5Z") + "}").encode(),  # a leap second
    ("{" + BASE.replace("22:00:00.123456Z", "24:00:00.000000Z") + "}").encode(),
    ("{" + BASE.replace("2023-11-14", "2023-02-29") + "}").encode(),
    ("{" + BASE.replace("2023-11-14", "2024-02-29") + "}").encode(),
    ("{" + BASE.replace("2023-11-14T", "2023-11-14 ") + "}").encode(),
    ("{" + BASE.replace("2023", "٢٠٢٣") + "}").encode(),  # non-ASCII digits
    ("{" + BASE.replace("2023-11-14T22:00:00.123456Z", "2023-11-15T22:13:20.000000Z") + "}").encode(),  # = limit
    ("{" + BASE.replace("2023-11-14T22:00:00.123456Z", "2023-11-15T22:13:20.000001Z") + "}").encode(),  # beyond
    ("{" + BASE.replace('"2023-11-14T22:00:00.123456Z"', "1700086400000") + "}").encode(),  # = limit, as ms
    ("{" + BASE.replace('"2023-11-14T22:00:00.123456Z"', "946684799999") + "}").encode(),
    ("{" + BASE.replace('"2023-11-14T22:00:00.123456Z"', "1.7e12") + "}").encode(),
    ("{" + BASE.replace('"2023-11-14T22:00:00.123456Z"', "1700000000000.5") + "}").encode(),
    ("{" + BASE + ',"x":' + "[" * 1100 + "]" * 1100 + "}").encode(),  # too deep for orjson and the stdlib
    ("{" + BASE + ',"x":' + "[" * 600 + "]" * 600 + "}").encode(),  # deep, but orjson reads it
    b"\xef\xbb\xbf{" + BASE.encode() + b"}",  # a byte order mark
    b" {" + BASE.encode() + b"} \t",
    b"",
    b"[]",
    b"{" + BASE.encode() + b"}{}",
]


def test_hand_picked_edges_match_reference() -> None:
    for key_field in KEY_FIELDS:
        check_fast_path(EDGES, key_field)
        check_batch_parser(EDGES, key_field)


def test_fast_path_takes_every_valid_synthetic_record() -> None:
    # The generator writes what producers typically send: the fast path takes all of it that is valid.
    spec = parse_synthetic_uri("synthetic://?events=3000&bad=0.05&duplicates=0.02&start=2023-11-14T00:00:00Z")
    payloads = [payload for _, _, payload in generate(spec)]
    accepted = check_fast_path(payloads)
    valid = sum(type(reference(p)[1]) is Event for p in payloads)
    assert accepted == valid > 2500
    check_batch_parser(payloads)


def test_size_limit_and_clock_limit_go_to_the_reference() -> None:
    payload = b"{" + BASE.encode() + b"}"
    assert FastJsonValidator(max_payload_bytes=len(payload) - 1, clock=lambda: NOW_US).validate_batch([payload]) == (
        [],
        [0],
    )
    # The clock is read once per batch; an event time beyond that reading + skew is the reference's to judge.
    now = [NOW_US]
    fast = FastJsonValidator(max_clock_skew_s=0, clock=lambda: now[0])
    at_limit = payload.replace(b"2023-11-14T22:00:00.123456Z", b"2023-11-14T22:13:20.000000Z")
    beyond = payload.replace(b"2023-11-14T22:00:00.123456Z", b"2023-11-14T22:13:20.000001Z")
    accepted, rest = fast.validate_batch([at_limit, beyond])
    assert [v[0] for v in accepted] == [0] and rest == [1]


def test_unusual_key_fields_go_to_the_reference() -> None:
    payload = b"{" + BASE.encode() + b',"tenant":{"a":1}}'
    assert FastJsonValidator("tenant").validate_batch([payload]) == ([], [0])
    check_batch_parser([payload], "tenant")


def test_finite_checks_are_the_references() -> None:
    # msgspec refuses 1e400; a finite float near the limit is a plain valid value on both paths.
    payload = ("{" + BASE + ',"value":1.7976931348623157e308}').encode()
    assert check_fast_path([payload]) == 1
    assert math.isfinite(event_of(FastJsonValidator().validate_batch([payload])[0][0], payload, SOURCE).value)
