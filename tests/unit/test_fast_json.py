"""The JSON fast path against the reference: differential tests on generated and hand-picked records.

The fast path (``transforms/fast_json.py``) may only ever *accept* a record, and then with exactly the Event the
reference (``decode_json`` + ``EventValidator``) gives it: same fields, same types (an int value stays an int).
Everything else it leaves to the reference. ``BatchParser`` chains the two; its outcome per record (the Event,
or stage + code + field + message) must be the reference's for any input.

Every check runs each implementation on its own: the C scanner (``transforms/_fastjson.c``), the msgspec path,
and the two chained ("auto", what the pipeline uses). The extension must be built here: CI notices a build that
silently fell back.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import tracemalloc
from typing import Any

import pytest
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
    with_raw_literal,
)
from transforms import dead_letter as dl
from transforms import fast_json
from transforms.dead_letter import Rejection
from transforms.fast_json import IMPLEMENTATIONS, FastJsonValidator, event_of
from transforms.io.synthetic import generate, parse_synthetic_uri
from transforms.parse import decode_json, parse_record
from transforms.parse_validate import BatchParser
from transforms.records import Event, RecordBatch, SourceRecord
from transforms.timefmt import parse_rfc3339_us
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


def check_fast_path(payloads: list[bytes], key_field: str = "page") -> dict[str, set[int]]:
    """Every record each implementation accepts is the reference's Event; "auto" accepts what the C scanner
    accepts plus what msgspec accepts of the rest. Returns the accepted positions per implementation."""
    expected_of: dict[int, Event | Rejection] = {}
    taken: dict[str, set[int]] = {}
    for implementation in IMPLEMENTATIONS:
        fast = FastJsonValidator(
            key_field, max_payload_bytes=MAX_PAYLOAD, clock=lambda: NOW_US, implementation=implementation
        )
        accepted, rest = fast.validate_batch(payloads)
        positions = [valid[0] for valid in accepted]
        assert positions == sorted(positions) and rest == sorted(rest), implementation  # batch order
        assert sorted(positions + rest) == list(range(len(payloads))), implementation
        for valid in accepted:
            payload = payloads[valid[0]]
            if valid[0] not in expected_of:
                expected_of[valid[0]] = reference(payload, key_field)[1]
            expected = expected_of[valid[0]]
            assert type(expected) is Event, (implementation, payload, expected)
            got = event_of(valid, payload, SOURCE)
            assert same_event(got, expected), (implementation, payload, got, expected)
        taken[implementation] = set(positions)
    assert taken["auto"] == taken["native"] | taken["msgspec"]
    return taken


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
    payload = with_raw_literal(obj, field, literal)
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
    # The generator writes what producers typically send: each fast path takes all of it that is valid.
    spec = parse_synthetic_uri("synthetic://?events=3000&bad=0.05&duplicates=0.02&start=2023-11-14T00:00:00Z")
    payloads = [payload for _, _, payload in generate(spec)]
    taken = check_fast_path(payloads)
    valid = {i for i, p in enumerate(payloads) if type(reference(p)[1]) is Event}
    assert len(valid) > 2500
    assert taken["native"] == taken["msgspec"] == taken["auto"] == valid
    check_batch_parser(payloads)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_size_limit_and_clock_limit_go_to_the_reference(implementation: str) -> None:
    payload = b"{" + BASE.encode() + b"}"
    small = FastJsonValidator(max_payload_bytes=len(payload) - 1, clock=lambda: NOW_US, implementation=implementation)
    assert small.validate_batch([payload]) == ([], [0])
    exact = FastJsonValidator(max_payload_bytes=len(payload), clock=lambda: NOW_US, implementation=implementation)
    assert [v[0] for v in exact.validate_batch([payload])[0]] == [0]
    # The clock is read once per batch; an event time beyond that reading + skew is the reference's to judge.
    now = [NOW_US]
    fast = FastJsonValidator(max_clock_skew_s=0, clock=lambda: now[0], implementation=implementation)
    at_limit = payload.replace(b"2023-11-14T22:00:00.123456Z", b"2023-11-14T22:13:20.000000Z")
    beyond = payload.replace(b"2023-11-14T22:00:00.123456Z", b"2023-11-14T22:13:20.000001Z")
    accepted, rest = fast.validate_batch([at_limit, beyond])
    assert [v[0] for v in accepted] == [0] and rest == [1]


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_unusual_key_fields_go_to_the_reference(implementation: str) -> None:
    payload = b"{" + BASE.encode() + b',"tenant":{"a":1}}'
    for key_field in ("tenant", "value", "event_time", "properties", "properties."):
        fast = FastJsonValidator(key_field, implementation=implementation)
        assert not fast.enabled and fast.validate_batch([payload]) == ([], [0])
    check_batch_parser([payload], "tenant")


def test_finite_checks_are_the_references() -> None:
    # msgspec refuses 1e400; a finite float near the limit is a plain valid value on every path.
    payload = ("{" + BASE + ',"value":1.7976931348623157e308}').encode()
    assert all(taken == {0} for taken in check_fast_path([payload]).values())
    for implementation in IMPLEMENTATIONS:
        valid = FastJsonValidator(implementation=implementation).validate_batch([payload])[0][0]
        assert math.isfinite(event_of(valid, payload, SOURCE).value)


# ---------------------------------------------------------------------------------------------------------------
# The C scanner: built here, and its own edges (what it must accept, what it must leave, arbitrary bytes).
# ---------------------------------------------------------------------------------------------------------------


def test_the_c_extension_is_built() -> None:
    # setup.py builds it as an optional extension: a failed build only warns, and the job silently runs the
    # msgspec path at half the speed. Here (and in CI) it must be there.
    assert fast_json.NATIVE is True, "transforms/_fastjson.c is not built: run `make install` (needs gcc)"
    assert FastJsonValidator().native and not FastJsonValidator(implementation="msgspec").native


def native(payloads: list[bytes], key_field: str = "page", **kwargs: Any) -> tuple[list[tuple], list[int]]:
    fast = FastJsonValidator(key_field, clock=lambda: NOW_US, implementation="native", **kwargs)
    return fast.validate_batch(payloads)


def record(**fields: Any) -> bytes:
    """BASE's record with fields replaced (a value given as bytes is spliced in raw)."""
    obj: dict[str, Any] = {"event_id": "e", "event_type": "click", "user_id": "u", "event_time": "2023-11-14T22:00:00Z"}
    raw: dict[str, bytes] = {}
    for name, value in fields.items():
        if type(value) is bytes:
            raw[name] = value
            value = f"@@{name}@@"
        obj[name] = value
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    for name, value in raw.items():
        text = text.replace(f'"@@{name}@@"'.encode(), value)
    return text


# What the scanner must take itself (and then exactly as the reference does).
C_ACCEPTS = [
    record(),
    b' \t\r\n{ "event_id" :\t"e" ,\n"event_type":"click", "user_id":"u","event_time" : 1700000000000 }\r\n ',
    record(event_time="2023-11-14t22:00:00z"),
    record(event_time="2020-02-29T12:00:00Z"),  # a leap day
    record(event_time="2000-02-29T00:00:00.5Z"),  # 2000 is a leap year (divisible by 400)
    record(event_time="2016-12-31T23:59:60Z"),  # a leap second: read as the next second
    record(event_time="2016-12-31T23:59:60.999999999Z"),
    record(event_time="2023-11-14T22:00:00.1Z"),
    record(event_time="2023-11-14T22:00:00.123Z"),
    record(event_time="2023-11-14T22:00:00.123456789Z"),  # truncated, not rounded
    record(event_time="2023-11-14T23:30:00+01:30"),
    record(event_time="2023-11-14T20:00:00-02:00"),
    record(event_time="2000-01-01T00:00:00Z"),  # the lower limit itself
    record(event_time="2023-11-15T22:13:20Z"),  # the upper limit (now + skew) itself
    record(event_time=b"1700000000000"),
    record(event_time=b"1.7e12"),
    record(event_time=b"1700000000000.0"),
    record(event_time=b"946684800000"),
    record(value=b"-0"),  # the int 0
    record(value=b"-0.0"),  # the float -0.0
    record(value=b"0"),
    record(value=b"999999999999999999"),  # 18 digits
    record(value=b"-999999999999999999"),
    record(value=b"1.5"),
    record(value=b"1E2"),
    record(value=b"1e-400"),  # underflows to 0.0, as in Python
    record(value=b"-1e-400"),
    record(value=b"1.7976931348623157e308"),
    record(value=b"5e-324"),
    record(value=b"0.30000000000000004"),
    record(page=None),
    record(page=""),
    record(page="p" * 2048),
    record(page=b'"\x7f~ !#$%&\'()*+,-./:;<=>?@[]^_`{|}"'),  # printable ASCII and DEL, unescaped
    record(event_id="x" * 128, user_id="u" * 256, event_type="a" + "_9" * 31 + "z"),  # every limit, exactly
    record(event_type="a"),
    record(properties={}),
    record(properties={"country": "de", "": "", "x": "y"}),
    record(tenant="t", n=1, f=1.5, t=True, no=None, nested={"a": [1, {"b": "c"}, []], "d": {}}, empty=[]),
    record(extra=b"[[[[[[[[[[1]]]]]]]]]]"),
    record(extra=b"123456789012345678901234567890e999"),  # an ignored number: any JSON number will do
    record(**{"event_type": "view", "": "empty name"}),
    record(extra=b'1,"extra":[2]'),  # an ignored name twice
]


@pytest.mark.parametrize("key_field", KEY_FIELDS[:5])
def test_the_scanner_takes_the_plain_shape(key_field: str) -> None:
    assert [p for p in C_ACCEPTS if p] == C_ACCEPTS  # no empty literal by mistake
    accepted, rest = native(C_ACCEPTS, key_field)
    assert rest == [], [C_ACCEPTS[i] for i in rest]
    assert check_fast_path(C_ACCEPTS, key_field)["native"] == set(range(len(C_ACCEPTS)))
    check_batch_parser(C_ACCEPTS, key_field)


def test_the_scanner_reads_values_as_python_does() -> None:
    accepted, _ = native([record(value=b"-0"), record(value=b"-0.0"), record(value=b"1e-400"), record(value=b"7")])
    assert [(v[6], type(v[6]), math.copysign(1, v[6])) for v in accepted] == [
        (0, int, 1.0),
        (0.0, float, -1.0),
        (0.0, float, 1.0),
        (7, int, 1.0),
    ]
    accepted, _ = native([record(event_time="2016-12-31T23:59:60Z"), record(event_time="2017-01-01T00:00:00Z")])
    assert accepted[0][4] == accepted[1][4] == parse_rfc3339_us("2017-01-01T00:00:00Z")
    accepted, _ = native([record(properties={"country": "de"})], "properties.country")
    assert accepted[0][7:] == ({"country": "de"}, "de")
    accepted, _ = native([record(properties={"city": "x"}), record()], "properties.country")
    assert [v[7:] for v in accepted] == [({"city": "x"}, None), (None, None)]


# What the scanner must leave (the reference decides; some of these are valid, which the msgspec path may take).
C_REFERS = [
    b"",
    b"{}",
    b"[]",
    b"null",
    b'"x"',
    record(event_id="\u00e9"),  # non-ASCII (valid: msgspec takes it)
    record(page="caf\u00e9"),
    record(properties={"city": "K\u00f6ln"}),
    record(event_id="a\nb"),  # an escape (valid)
    record(event_id=b'"a\\/b"'),
    record(event_id=b'"\\u0041"'),
    record().replace(b'"event_id"', b'"ev\\u0065nt_id"'),  # an escaped name (valid: it is event_id)
    record(event_id=b'"a\x00b"'),  # a raw control character: malformed
    record(event_id=b'"a\tb"'),
    record() + b"\x00",
    record() + b"x",
    record() + b"{}",
    record() + b",",
    b"\xef\xbb\xbf" + record(),  # a byte order mark
    b"\x0c" + record(),  # form feed is not JSON whitespace
    record()[:-1],
    record()[1:],
    record()[:-1] + b",}",  # a trailing comma
    record().replace(b"{", b"{,", 1),
    record(event_id=b'"e","event_id":"f"'),  # a name twice (the reference keeps the last)
    record(page=b'null,"page":"p"'),
    record(properties=b'{"a":"1","a":"2"}'),  # a property twice
    record(properties=b'{"a":{"b":"c"}}'),  # nested: invalid_type
    record(properties=b'{"a":1}'),
    record(properties=b'{"a":null}'),
    record(properties=b"null"),
    record(properties=b"[]"),
    record(value=b"1234567890123456789"),  # 19 digits (valid: beyond the scanner's int64 reading)
    record(value=b"18446744073709551617"),
    record(value=b"9" * 400),
    record(value=b"1e400"),
    record(value=b"-1e400"),
    record(value=b"1" + b"0" * 70 + b".5"),  # a float token longer than the scanner copies (valid)
    record(value=b"true"),
    record(value=b"null"),
    record(value=b'"1"'),
    record(value=b"01"),
    record(value=b"-"),
    record(value=b"1."),
    record(value=b".5"),
    record(value=b"+1"),
    record(value=b"1e"),
    record(value=b"1e+"),
    record(value=b"NaN"),
    record(value=b"Infinity"),
    record(extra=b"tru"),
    record(extra=b"nul"),
    record(extra=b"[1,]"),
    record(extra=b'{"a"}'),
    record(extra=b'{"a":1,}'),
    record(extra=b"[" * 40 + b"]" * 40),  # deeper than the scanner skips (valid)
    record(extra=b'"\\ud800"'),  # a lone surrogate escape in an ignored field: malformed
    record(event_time="1900-02-29T00:00:00Z"),  # 1900 is not a leap year
    record(event_time="2023-02-29T00:00:00Z"),
    record(event_time="2100-02-29T00:00:00Z"),
    record(event_time="2023-04-31T00:00:00Z"),
    record(event_time="2023-13-01T00:00:00Z"),
    record(event_time="2023-00-01T00:00:00Z"),
    record(event_time="2023-01-00T00:00:00Z"),
    record(event_time="0000-01-01T00:00:00Z"),
    record(event_time="2023-11-14T24:00:00Z"),
    record(event_time="2023-11-14T23:60:00Z"),
    record(event_time="2023-11-14T23:59:61Z"),
    record(event_time="2023-11-14 22:00:00Z"),
    record(event_time="2023-11-14T22:00:00"),
    record(event_time="2023-11-14T22:00:00.Z"),
    record(event_time="2023-11-14T22:00:00+0100"),
    record(event_time="2023-11-14T22:00:00+24:00"),
    record(event_time="2023-11-14T22:00:00+01:60"),
    record(event_time="2023-11-14T22:00:00ZZ"),
    record(event_time="2023-11-14T22:00:00.123Zx"),
    record(event_time="2023-1-14T22:00:00Z"),
    record(event_time="+2023-11-14T22:00:00Z"),
    record(event_time="1999-12-31T23:59:59.999999Z"),  # before the lower limit
    record(event_time="2023-11-15T22:13:20.000001Z"),  # beyond now + skew
    record(event_time=b"946684799999"),
    record(event_time=b"1700086400001"),
    record(event_time=b"1700000000000.5"),
    record(event_time=b"-1700000000000"),
    record(event_time=b"999999999999999999"),
    record(event_time=b"1e400"),
    record(event_time=b"true"),
    record(event_time=b"null"),
    record(event_type="Click"),
    record(event_type="1click"),
    record(event_type="_click"),
    record(event_type="cl-ick"),
    record(event_type=""),
    record(event_type="a" * 65),
    record(event_id=""),
    record(event_id="x" * 129),
    record(user_id=""),
    record(user_id="u" * 257),
    record(page="p" * 2049),
    record(page=b"1"),
    record(event_id=b"1"),
    record(event_id=b"null"),
    json.dumps({"event_type": "click", "user_id": "u", "event_time": "2023-11-14T22:00:00Z"}).encode(),
    json.dumps({"event_id": "e", "user_id": "u", "event_time": "2023-11-14T22:00:00Z"}).encode(),
    json.dumps({"event_id": "e", "event_type": "click", "event_time": "2023-11-14T22:00:00Z"}).encode(),
    json.dumps({"event_id": "e", "event_type": "click", "user_id": "u"}).encode(),
]


@pytest.mark.parametrize("key_field", KEY_FIELDS[:5])
def test_the_scanner_leaves_everything_unusual(key_field: str) -> None:
    accepted, rest = native(C_REFERS, key_field)
    assert accepted == [], [C_REFERS[v[0]] for v in accepted]
    assert rest == list(range(len(C_REFERS)))
    check_fast_path(C_REFERS, key_field)
    check_batch_parser(C_REFERS, key_field)


def test_the_scanner_never_reads_past_a_cut() -> None:
    # Every prefix of every record (a cut at each byte), alone in its own bytes object so that a read past its
    # end would read past the buffer (which the fuzz tests and valgrind-free CI would otherwise miss).
    for payload in [*C_ACCEPTS, *C_REFERS]:
        cuts = [bytes(payload[:size]) for size in range(len(payload) + 1)]
        check_fast_path(cuts)


def test_non_bytes_payloads_are_left() -> None:
    payload = record()
    accepted, rest = native([bytearray(payload), memoryview(payload), payload])
    assert [v[0] for v in accepted] == [2] and rest == [0, 1]


DATE_TIME_PIECES = st.lists(
    st.sampled_from(
        ["2023", "1900", "2000", "2100", "0000", "9999", "-", "02", "29", "30", "31", "12", "13", "00", "T", "t", " ",
         "23", "24", "59", "60", "61", ":", ".", "5", "123456", "1234567", "Z", "z", "+", "01:30", "24:00", "1", ""]
    ),
    max_size=14,
)  # fmt: skip


@settings(PROPERTY, max_examples=2000)
@given(DATE_TIME_PIECES | st.builds(lambda t: [t], rfc3339()) | st.builds(lambda t: [t], st.text(max_size=40)))
def test_the_scanners_rfc3339_reading_is_the_references(pieces: list[str]) -> None:
    # Calendar ranges (leap years, Feb 29 1900, month and day limits), leap seconds, fractions and offsets: the
    # scanner reads a date-time exactly as timefmt.parse_rfc3339_us, or not at all where that one refuses.
    text = "".join(pieces)
    got = fast_json._fastjson.rfc3339_us(text.encode("utf-8", "surrogatepass"))
    expected = parse_rfc3339_us(text) if text.isascii() else None
    assert got == expected, text


def test_every_calendar_day_and_its_neighbours() -> None:
    for year in (1, 4, 1900, 1999, 2000, 2023, 2024, 2100, 2400, 9999):
        for month in range(14):
            for day in (0, 1, 28, 29, 30, 31, 32):
                for clock in ("00:00:00", "23:59:60.999999"):
                    text = f"{year:04d}-{month:02d}-{day:02d}T{clock}Z"
                    assert fast_json._fastjson.rfc3339_us(text.encode()) == parse_rfc3339_us(text), text


# A token soup: the bytes JSON is made of, so that arbitrary sequences get far into the scanner's grammar.
JSON_BYTES = st.lists(
    st.sampled_from(
        [b"{", b"}", b"[", b"]", b":", b",", b'"', b"\\", b" ", b"\n", b"\x00", b"\xc3\xa9", b"\xff", b"true",
         b"null", b"fals", b"-", b"0", b"1", b".", b"e", b"+", b'"event_id"', b'"event_type"', b'"user_id"',
         b'"event_time"', b'"page"', b'"value"', b'"properties"', b'"e"', b'"click"', b'"2023-11-14T22:00:00Z"',
         b"1700000000000", b'"x"']
    ),
    max_size=40,
).map(b"".join)  # fmt: skip


@settings(PROPERTY, max_examples=3000)
@given(
    st.binary(max_size=300) | JSON_BYTES | st.builds(lambda a, b: a[: len(a) // 2] + b, st.just(record()), JSON_BYTES)
)
def test_arbitrary_bytes_never_crash_the_scanner_nor_pass_it_wrongly(payload: bytes) -> None:
    check_fast_path([payload, record()])  # never accepts what the reference rejects, nor with other fields


@settings(PROPERTY, max_examples=500)
@given(st.lists(st.sampled_from(C_ACCEPTS + C_REFERS), max_size=30), st.sampled_from(KEY_FIELDS[:5]))
def test_mixed_batches_keep_batch_order(payloads: list[bytes], key_field: str) -> None:
    check_fast_path(payloads, key_field)
    check_batch_parser(payloads, key_field)


def test_the_scanner_keeps_no_references() -> None:
    # Every object it makes is either returned or freed: no growth over many batches, and the payloads' own
    # reference counts are untouched.
    payloads = [bytes(bytearray(p)) for p in [*C_ACCEPTS, *C_REFERS] * 3 if p]  # fresh objects, ours alone
    fast = FastJsonValidator("properties.country", clock=lambda: NOW_US, implementation="native")
    counts = [sys.getrefcount(p) for p in payloads]
    for _ in range(50):
        fast.validate_batch(payloads)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(300):
            fast.validate_batch(payloads)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 10_000, f"{grown} bytes still allocated after 300 batches"
    assert [sys.getrefcount(p) for p in payloads] == counts


def test_bad_arguments_are_errors_not_crashes() -> None:
    scan = fast_json._fastjson.validate_batch
    limits = (0, 2**62, 1 << 20, 128, 256, 2048)
    with pytest.raises(TypeError):
        scan(None, *limits, 0, None)
    with pytest.raises(ValueError):
        scan([], *limits, 5, None)
    with pytest.raises(TypeError):
        scan([], *limits, 4, None)  # properties.<name> needs the name
    with pytest.raises(OverflowError):
        scan([], 0, 2**64, *limits[2:], 0, None)
    assert scan((record(), b"x"), *limits, 0, None)[1] == [1]  # any sequence of payloads
    assert scan(iter([b"x"]), *limits, 0, None) == ([], [0])
    with pytest.raises(ValueError, match="implementation"):
        FastJsonValidator(implementation="rust")


DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=25)
NUMBER_TOKENS = st.builds(
    lambda sign, whole, fraction, exponent: f"{sign}{whole}{fraction}{exponent}",
    st.sampled_from(["", "-"]),
    st.integers(min_value=0, max_value=10**25).map(str),
    st.just("") | DIGITS.map(".".__add__),
    st.just("")
    | st.builds("{}{}{}".format, st.sampled_from("eE"), st.sampled_from(["", "+", "-"]), st.integers(0, 400)),
)


@settings(PROPERTY, max_examples=2500)
@given(NUMBER_TOKENS | st.floats(allow_nan=False, allow_infinity=False).map(repr) | st.integers().map(str))
def test_the_scanners_numbers_are_pythons(token: str) -> None:
    # Integers of up to 18 digits as int, other numbers as the correctly rounded double (Clinger's exact fast
    # path or PyOS_string_to_double), bit for bit what the reference (orjson, else the stdlib) reads; else None.
    got = fast_json._fastjson.number(token.encode())
    if got is None:
        return
    expected = json.loads(token)
    assert type(got) is type(expected), token
    if type(got) is float:
        assert math.isfinite(got) and got.hex() == expected.hex(), token
    else:
        assert got == expected, token


SPECIAL_BYTES = [*range(0x20), ord('"'), ord("\\"), 0x80, 0xC3, 0xE2, 0xFF]


@pytest.mark.parametrize("where", ["first field", "last field"])
def test_every_special_byte_at_every_position_of_a_string(where: str) -> None:
    # Strings are scanned eight bytes at a time, and byte by byte near the payload's end: a quote, a backslash,
    # a control character or a non-ASCII byte at any position of any length of string is seen (and the record
    # left), and every plain byte is read as itself.
    def payload(text: bytes) -> bytes:
        if where == "first field":
            return b'{"event_id":"' + text + b'","event_type":"click","user_id":"u","event_time":1700000000000}'
        return b'{"event_type":"click","user_id":"u","event_time":1700000000000,"event_id":"' + text + b'"}'

    plain = bytes(c for c in range(0x20, 0x80) if c not in b'"\\')
    for size in range(1, 26):
        text = (plain * 2)[size : size * 2]
        accepted, rest = native([bytes(payload(text))])
        assert rest == [] and accepted[0][1] == text.decode()
        for position in range(size):
            mutants = [bytes(payload(text[:position] + bytes([c]) + text[position + 1 :])) for c in SPECIAL_BYTES]
            accepted, rest = native(mutants)
            assert accepted == [], [(mutants[v[0]], v) for v in accepted]
