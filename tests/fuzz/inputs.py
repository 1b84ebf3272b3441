"""A seeded, deterministic generator of hostile inputs for parse + validate: (kind, format, payload bytes).

Kinds, each a share of the stream (``WEIGHTS``):

- ``json_near_valid``: a valid event with one field mutated (dropped, null, wrong type, boundary length, bad
  time, nested, huge number, lone surrogate), sometimes two or three.
- ``json_bytes``: a valid event's bytes with one byte-level fault (bit flip, insert, delete, truncate,
  invalid UTF-8 sequence, encoded surrogate, overlong encoding, byte order mark).
- ``json_structure``: not an event at all: scalars, arrays, raw literals (NaN, 1e999, 5000-digit integers,
  ``"\\ud800"``), moderately nested values, empty and whitespace payloads.
- ``avro_bytes`` / ``avro_fields``: schemaless Avro of ``schemas/event.avsc``, mutated at byte or field level.
- ``confluent``: the Confluent wire format: magic byte, schema id (1, 2 = newer compatible, 7 = incompatible,
  unknown), header truncation, body mutations.
- ``random``: random bytes.
- ``heavy`` (one in ``HEAVY_EVERY``): payloads at the size limit (limit - 1, limit, limit + 1, larger), valid
  events padded to just under it, JSON nested 1,000 to 200,000 levels deep, long invalid UTF-8 runs.

Everything derives from ``random.Random(seed)``: the same (seed, count) gives the same inputs, in CI and locally.
"""

from __future__ import annotations

import io
import random
import struct
from collections.abc import Iterator
from typing import Any

import fastavro
import orjson

import schemas

NOW_US = 1_700_000_000_000_000  # the validator's fixed clock: 2023-11-14T22:13:20Z
MAX_PAYLOAD = 1 << 20  # --max_payload_bytes default
HEAVY_EVERY = 997

# Confluent ids the fuzz registry knows: 1 = event.avsc, 2 = event_v2.avsc (compatible), 7 = incompatible.
INCOMPATIBLE_ID = 7

WEIGHTS = {
    "json_near_valid": 34,
    "json_bytes": 20,
    "json_structure": 8,
    "avro_bytes": 10,
    "avro_fields": 6,
    "confluent": 14,
    "random": 8,
}
FORMAT_OF = {
    "json_near_valid": "json",
    "json_bytes": "json",
    "json_structure": "json",
    "avro_bytes": "avro",
    "avro_fields": "avro",
    "confluent": "confluent-avro",
    "random": None,  # any of the three
}

FIELDS = ("event_id", "event_type", "user_id", "event_time", "page", "value", "properties")
EVENT_TYPES = ("click", "page_view", "purchase", "a", "x" * 64, "add_to_cart_2")
TIMES = (
    "2023-11-14T22:00:00Z",
    "2000-01-01T00:00:00Z",
    "2023-11-15T22:13:20Z",
    "2023-11-14T22:00:00.123456789+05:30",
    "2010-06-30t12:00:00z",
    1_600_000_000_000,
    946_684_800_000,
    1.6e12,
)
BAD_TIMES = (
    "1999-12-31T23:59:59.999Z",
    "2023-11-15T22:13:20.000001Z",
    "2023-02-30T00:00:00Z",
    "2023-11-14 22:00:00Z",
    "2023-11-14T22:00:00",
    "2023-11-14T22:00:00+0530",
    "2023-11-14T24:00:00Z",
    "２０２３-11-14T22:00:00Z",
    "1700000000000",
    "",
    1.5,
    -1,
    2**63,
    10**30,
    True,
    None,
    [],
    {},
)
WRONG_VALUES = (None, True, False, 0, -1, 1.5, 2**64, -(2**70), "", "x", [], {}, [1], {"a": 1}, 1e308, -1e308)
SIZES = (0, 1, 63, 64, 65, 127, 128, 129, 255, 256, 257, 2047, 2048, 2049)
CHARS = ("a", "é", "😀", "\u0301", "\x00", "\n", "\ufeff", "\ud800")
RAW_LITERALS = (
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-1e999",
    b'"\\ud800"',
    b'"\\udfff x"',
    b'"\\ud83d\\ude00"',
    b"9" * 5000,
    b"-" + b"9" * 5000,
    b"18446744073709551617",
    b"1.7e12",
    b"tru",
    b"nul",
    b"01",
    b"1.",
    b'"\\u00"',
    b"[" * 300 + b"]" * 300,
    b"[" * 1100 + b"]" * 1100,
)
BAD_UTF8 = (
    b"\xff",
    b"\x80",
    b"\xc0\xaf",
    b"\xed\xa0\x80",  # a UTF-16 surrogate encoded as UTF-8 (CESU-8)
    b"\xed\xbf\xbf",
    b"\xe2\x82",
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
)


def _avro_schema_v2() -> dict[str, Any]:
    return schemas.confluent_schemas()[2]


def fuzz_registry() -> dict[int, dict[str, Any]]:
    """The shipped registry plus an incompatible writer schema under ``INCOMPATIBLE_ID`` (user_id is a long)."""
    registry = dict(schemas.confluent_schemas())
    raw = orjson.loads(orjson.dumps({k: v for k, v in schemas.event_avro_schema().items() if not k.startswith("__")}))
    for field in raw["fields"]:
        if field["name"] == "user_id":
            field["type"] = "long"
    registry[INCOMPATIBLE_ID] = fastavro.parse_schema(raw)
    return registry


class InputGenerator:
    """Deterministic stream of (kind, format, payload); ``count`` inputs from ``seed``."""

    def __init__(self, seed: int, max_payload: int = MAX_PAYLOAD) -> None:
        self._rng = random.Random(seed)
        self._max = max_payload
        self._kinds = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]
        self._avro = schemas.event_avro_schema()
        self._avro_v2 = _avro_schema_v2()
        self._incompatible = fuzz_registry()[INCOMPATIBLE_ID]
        rng = random.Random(seed ^ 0x5EED)
        self._events = [self._valid_event(rng, i) for i in range(512)]
        self._json = [orjson.dumps(e) for e in self._events]
        self._avro_bodies = [self._encode_avro(self._avro, self._as_avro(e)) for e in self._events]
        self._avro_v2_bodies = [
            self._encode_avro(self._avro_v2, {**self._as_avro(e), "session_id": f"s-{i}"})
            for i, e in enumerate(self._events)
        ]
        self._incompatible_bodies = [
            self._encode_avro(self._incompatible, {**self._as_avro(e), "user_id": i})
            for i, e in enumerate(self._events[:64])
        ]

    # ---- valid material ---------------------------------------------------------------------------------------

    @staticmethod
    def _valid_event(rng: random.Random, i: int) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": f"e-{i}-{rng.randrange(10**9)}",
            "event_type": rng.choice(EVENT_TYPES),
            "user_id": rng.choice(["u", "user-42", "ü" * 5, "😀", "x" * 256]),
            "event_time": rng.choice(TIMES),
        }
        if rng.random() < 0.75:
            event["page"] = rng.choice([None, "/", "/home", "/p" * 1024, "ключ"])
        if rng.random() < 0.75:
            event["value"] = rng.choice([0, 1, -7, 2.5, 1e300, 2**63 - 1, -(2**63)])
        if rng.random() < 0.5:
            event["properties"] = rng.choice([{}, {"country": "fr"}, {"a": "1", "ключ": "😀"}])
        if rng.random() < 0.2:
            event["extra"] = rng.choice([1, [1, 2], {"deep": {"er": None}}, "x"])
        return event

    @staticmethod
    def _as_avro(event: dict[str, Any]) -> dict[str, Any]:
        out = {name: event.get(name) for name in FIELDS}
        if isinstance(out["event_time"], float):
            out["event_time"] = int(out["event_time"])
        return out

    @staticmethod
    def _encode_avro(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, record)
        return out.getvalue()

    # ---- the stream -------------------------------------------------------------------------------------------

    def generate(self, count: int) -> Iterator[tuple[str, str, bytes]]:
        rng = self._rng
        kinds = self._kinds
        make = {
            "json_near_valid": self._json_near_valid,
            "json_bytes": self._json_bytes,
            "json_structure": self._json_structure,
            "avro_bytes": self._avro_mutated,
            "avro_fields": self._avro_fields,
            "confluent": self._confluent,
            "random": self._random,
        }
        for n in range(count):
            if n % HEAVY_EVERY == HEAVY_EVERY - 1:
                fmt, payload = self._heavy()
                yield "heavy", fmt, payload
                continue
            kind = kinds[rng.randrange(len(kinds))]
            payload = make[kind]()
            fmt = FORMAT_OF[kind] or rng.choice(("json", "avro", "confluent-avro"))
            yield kind, fmt, payload

    def _json_near_valid(self) -> bytes:
        rng = self._rng
        event = dict(self._events[rng.randrange(len(self._events))])
        for _ in range(rng.choice((1, 1, 1, 1, 2, 3, 0))):
            self._mutate_field(event, rng.choice(FIELDS))
        try:
            return orjson.dumps(event)
        except (orjson.JSONEncodeError, TypeError):  # lone surrogates, > 64-bit ints: the stdlib writes those
            import json

            return json.dumps(event, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")

    def _mutate_field(self, event: dict[str, Any], name: str) -> None:
        rng = self._rng
        how = rng.randrange(8)
        if how == 0:
            event.pop(name, None)
        elif how == 1:
            event[name] = None
        elif how == 2:
            event[name] = rng.choice(WRONG_VALUES)
        elif how == 3:
            event[name] = rng.choice(CHARS) * rng.choice(SIZES)
        elif how == 4:
            event[name] = rng.choice(BAD_TIMES)
        elif how == 5:
            value: Any = event.get(name, "x")
            for _ in range(rng.randrange(1, 60)):
                value = [value] if rng.random() < 0.5 else {"k": value}
            event[name] = value
        elif how == 6:
            event[name] = rng.choice([{"a": 1}, {"a": None}, {"": ""}, {"k": ["v"]}, {"😀": "\ud800"}])
        else:
            event[name] = rng.choice(["Click", "click\n", " click", "a" * 65, "1abc", "_x", "é"])

    def _json_bytes(self) -> bytes:
        rng = self._rng
        payload = self._json[rng.randrange(len(self._json))]
        return self._mutate_bytes(payload, json_text=True)

    def _mutate_bytes(self, payload: bytes, json_text: bool = False) -> bytes:
        rng = self._rng
        if not payload:
            return bytes([rng.randrange(256)])
        at = rng.randrange(len(payload) + 1)
        how = rng.randrange(8 if json_text else 6)
        if how == 0:  # flip a bit
            i = min(at, len(payload) - 1)
            return payload[:i] + bytes([payload[i] ^ (1 << rng.randrange(8))]) + payload[i + 1 :]
        if how == 1:
            return payload[:at] + bytes([rng.randrange(256)]) + payload[at:]
        if how == 2:
            return payload[:at] + payload[at + 1 :]
        if how == 3:
            return payload[:at]
        if how == 4:
            return payload[:at] + rng.choice(BAD_UTF8) + payload[at:]
        if how == 5:  # repeat a slice
            j = rng.randrange(at, len(payload) + 1)
            return payload[:j] + payload[at:j] + payload[j:]
        if how == 6:
            return b"\xef\xbb\xbf" + payload  # a UTF-8 byte order mark
        return payload + rng.choice((b"\n", b" ", b"{}", b"x", b"\x00", b"\xff"))

    def _json_structure(self) -> bytes:
        rng = self._rng
        how = rng.randrange(6)
        if how == 0:
            return rng.choice((b"", b" ", b"\n\t ", b"null", b"true", b"0", b'"text"', b"[]", b"[1,2,3]", b"{}"))
        if how == 1:  # a raw literal spliced in as a field's value
            event = dict(self._events[rng.randrange(len(self._events))])
            event[rng.choice((*FIELDS, "extra"))] = "@@RAW@@"
            return orjson.dumps(event).replace(b'"@@RAW@@"', rng.choice(RAW_LITERALS))
        if how == 2:
            return rng.choice(RAW_LITERALS)
        if how == 3:  # nested moderately deep, around orjson's and the stdlib's limits
            depth = rng.choice((10, 254, 255, 500, 1023, 1024, 1025, 1500))
            opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
            return opener * depth + b"1" + closer * depth
        if how == 4:  # a complete value, then something
            return self._json[rng.randrange(len(self._json))] + rng.choice((b" {}", b"1", b"\n{}", b"]"))
        return b"[" + b",".join(self._json[rng.randrange(len(self._json))] for _ in range(rng.randrange(1, 4))) + b"]"

    def _avro_mutated(self) -> bytes:
        return self._mutate_bytes(self._avro_bodies[self._rng.randrange(len(self._avro_bodies))])

    def _avro_fields(self) -> bytes:
        rng = self._rng
        event = self._as_avro(self._events[rng.randrange(len(self._events))])
        name = rng.choice(("event_id", "event_type", "user_id", "event_time", "page"))
        how = rng.randrange(4)
        if how == 0:
            event[name] = rng.choice(("a", "é", "😀", "\x00")) * rng.choice(SIZES)
        elif how == 1:
            event["event_time"] = rng.choice((-1, 0, 2**63 - 1, "", "2023-02-30T00:00:00Z", 946_684_799_999))
        elif how == 2:
            event["value"] = rng.choice((float("nan"), float("inf"), -float("inf"), 2**63 - 1, 0.0, -0.0))
        else:
            event["properties"] = rng.choice(({}, {"": ""}, {"k" * 300: "v" * 3000}))
        if name == "page" and event["page"] is not None and rng.random() < 0.5:
            event["page"] = None
        return self._encode_avro(self._avro, event)

    def _confluent(self) -> bytes:
        rng = self._rng
        how = rng.randrange(10)
        i = rng.randrange(len(self._avro_bodies))
        if how <= 2:
            schema_id, body = 1, self._avro_bodies[i]
        elif how <= 5:
            schema_id, body = 2, self._avro_v2_bodies[i]
        elif how == 6:
            schema_id, body = INCOMPATIBLE_ID, self._incompatible_bodies[i % len(self._incompatible_bodies)]
        else:
            schema_id, body = rng.choice((0, 3, 42, 2**32 - 1, 256)), self._avro_bodies[i]
        header = b"\x00" + struct.pack(">I", schema_id)
        fault = rng.randrange(6)
        if fault == 0:
            return header + body
        if fault == 1:
            return bytes([rng.randrange(1, 256)]) + header[1:] + body  # wrong magic byte
        if fault == 2:
            return header[: rng.randrange(5)]  # truncated header
        if fault == 3:  # a flipped bit in the schema id
            sid = bytearray(header)
            sid[1 + rng.randrange(4)] ^= 1 << rng.randrange(8)
            return bytes(sid) + body
        return header + self._mutate_bytes(body)

    def _random(self) -> bytes:
        rng = self._rng
        return rng.randbytes(rng.choice((0, 1, 2, 5, 16, 64, 400)))

    def _heavy(self) -> tuple[str, bytes]:
        rng = self._rng
        limit = self._max
        how = rng.randrange(7)
        fmt = "json"
        if how == 0:  # garbage of exactly the limit, one less, one more, or far more
            size = rng.choice((limit - 1, limit, limit + 1, 4 * limit))
            payload = bytes([rng.randrange(256)]) * size
            fmt = rng.choice(("json", "avro", "confluent-avro"))
        elif how == 1:  # a valid event padded to just under, at, or just over the limit
            base = self._json[rng.randrange(len(self._json))]
            size = limit + rng.choice((-1, 0, 1, -1000))
            pad = size - len(base) - len(b',"pad":""')
            payload = base[:-1] + b',"pad":"' + b"p" * pad + b'"}'
        elif how == 2:  # nested far deeper than any parser's recursion limit
            depth = rng.choice((5_000, 50_000, 200_000))
            payload = b"[" * depth + b"]" * depth if rng.random() < 0.5 else b'{"a":' * depth + b"1" + b"}" * depth
        elif how == 3:  # a field's value nested deep inside an otherwise valid event
            depth = rng.choice((2_000, 20_000))
            base = self._json[rng.randrange(len(self._json))]
            payload = base[:-1] + b',"extra":' + b"[" * depth + b"]" * depth + b"}"
        elif how == 4:  # a long run of invalid UTF-8 in a string
            base = self._json[rng.randrange(len(self._json))]
            payload = base[:-1] + b',"junk":"' + rng.choice(BAD_UTF8) * rng.choice((1000, 100_000)) + b'"}'
        elif how == 5:  # an Avro string whose length prefix claims gigabytes
            payload = b"\xfe\xff\xff\xff\x0f" + self._avro_bodies[0][1:]
            fmt = rng.choice(("avro", "confluent-avro"))
            if fmt == "confluent-avro":
                payload = b"\x00" + struct.pack(">I", 1) + payload
        else:  # a 10,000-entry properties map in Avro
            event = {**self._as_avro(self._events[0]), "properties": {f"k{i}": "v" * 50 for i in range(10_000)}}
            payload = self._encode_avro(self._avro, event)
            fmt = "avro"
        return fmt, payload
