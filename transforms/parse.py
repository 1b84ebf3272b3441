"""Decoding raw record bytes into a JSON-like object: size limit, UTF-8, JSON or Avro syntax, top-level object.

The decoders are plain functions (used by the Beam transform, the benchmark's plain loop and the fuzz tests) and
never raise on bad input: they return a ``Rejection`` with the first failing check of the contract's order.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable
from typing import Any

import fastavro
import orjson

import schemas
from transforms import dead_letter as dl
from transforms.avro_compat import incompatibility, parsed_schema
from transforms.avro_scan import canonical_or_violation, first_violation
from transforms.dead_letter import Rejection
from transforms.records import SourceRecord

FORMAT_JSON = "json"
FORMAT_AVRO = "avro"
# Confluent wire format: magic byte 0, 4-byte big-endian schema id, schemaless Avro body (schemas/registry.json).
FORMAT_CONFLUENT_AVRO = "confluent-avro"
FORMATS = (FORMAT_JSON, FORMAT_AVRO, FORMAT_CONFLUENT_AVRO)


Decoded = dict[str, Any]
Decoder = Callable[[bytes], "Decoded | Rejection"]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


# Stands in for an integer literal longer than sys.get_int_max_str_digits() (4300 digits), which int() refuses
# (and would convert in quadratic time): such a number is far beyond every range the contract accepts, so only
# its sign matters (value -> invalid_value, event_time -> timestamp_out_of_range, other fields -> invalid_type).
_HUGE_INT = 10**4300


def _parse_int(literal: str) -> int:
    try:
        return int(literal)
    except ValueError:
        return -_HUGE_INT if literal.startswith("-") else _HUGE_INT


def _strict_stdlib_loads(text: str) -> Any:
    """The slow, exact fallback: accepts all of RFC 8259 (huge integers, 1e999) but no NaN/Infinity."""
    return json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)


def _has_lone_surrogate(value: Any) -> bool:
    """True if a decoded JSON value holds a lone UTF-16 surrogate (``"\\ud800"``), which is not Unicode text.

    Iterative: the fallback parser accepts nesting deeper than Python's recursion limit allows a recursive walk.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def decode_json(payload: bytes) -> Decoded | Rejection:
    """UTF-8 JSON object -> dict, or the rejection (invalid_encoding, malformed_json, not_an_object)."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as fast_error:
        # orjson is strict but narrower than RFC 8259 (depth 1024, 64-bit ints are fine, 1e999 is not):
        # decide encoding first, then let the exact parser have the last word.
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            return Rejection(dl.INVALID_ENCODING, None, f"payload is not valid UTF-8: {exc.reason} at byte {exc.start}")
        try:
            obj = _strict_stdlib_loads(text)
        except RecursionError:
            return Rejection(dl.MALFORMED_JSON, None, "JSON nesting is too deep to parse")
        except ValueError:
            return Rejection(dl.MALFORMED_JSON, None, f"malformed JSON: {fast_error}")
        if _has_lone_surrogate(obj):
            return Rejection(dl.MALFORMED_JSON, None, "malformed JSON: string holds a lone UTF-16 surrogate escape")
    else:
        # orjson turns an integer outside [-2**63, 2**64) into a float (which rounds to at least 2**64 or at most
        # -2**63); the contract keeps a `value` int as given, so let the exact parser read such a record.
        value = obj.get("value") if type(obj) is dict else None
        if type(value) is float and value.is_integer() and not -(2**63) < value < 2**64:
            with contextlib.suppress(RecursionError):  # too deep for the exact parser: keep orjson's reading
                obj = _strict_stdlib_loads(payload.decode("utf-8"))
    if type(obj) is not dict:
        return Rejection(dl.NOT_AN_OBJECT, None, f"top-level JSON value is {_json_type(obj)}, not an object")
    return obj


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# Optional Avro fields whose null means "absent" in the contract (JSON null is a type error for these).
_AVRO_NULL_IS_ABSENT = ("value", "properties")


def avro_nulls_as_absent(obj: dict[str, Any]) -> dict[str, Any]:
    """Avro can only say "absent" with null: drop those optional fields so the contract's checks apply."""
    for name in _AVRO_NULL_IS_ABSENT:
        if obj.get(name, 0) is None:
            del obj[name]
    return obj


def avro_decoder(writer_schema: dict[str, Any] | None = None) -> Decoder:
    """A decoder for schemaless Avro binary written with ``writer_schema`` (default: ``schemas/event.avsc``)."""
    reader_schema = schemas.event_avro_schema()
    writer = reader_schema if writer_schema is None else parsed_schema(writer_schema)
    resolve = None if writer is reader_schema else reader_schema

    def decode_avro(payload: bytes) -> Decoded | Rejection:
        buffer = io.BytesIO(payload)
        try:
            obj = fastavro.schemaless_reader(buffer, writer, resolve)
        except UnicodeDecodeError as exc:
            return Rejection(dl.INVALID_ENCODING, None, f"Avro string is not valid UTF-8: {exc.reason}")
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types (EOFError, IndexError...) on garbage
            # The strict walk names the field and the fault; fastavro's own text is the fallback. It names the
            # stream ("<_io.BytesIO object at 0x..>"): exception_text drops the address.
            return first_violation(payload, writer) or Rejection(
                dl.MALFORMED_AVRO, None, f"malformed Avro: {dl.exception_text(exc)}"[:500]
            )
        if buffer.tell() != len(payload):
            return Rejection(
                dl.MALFORMED_AVRO,
                None,
                f"malformed Avro: {len(payload) - buffer.tell()} trailing bytes after the record",
            )
        # fastavro accepts what the specification does not (a negative union index reads the last branch).
        if resolve is None:
            violation = canonical_or_violation(payload, writer, obj)
        else:
            violation = first_violation(payload, writer)
        if violation is not None:
            return violation
        return avro_nulls_as_absent(obj)

    return decode_avro


def decode_avro(payload: bytes) -> Decoded | Rejection:
    """Schemaless Avro binary of ``schemas/event.avsc`` -> dict, or the rejection."""
    return _DEFAULT_AVRO(payload)


_DEFAULT_AVRO = avro_decoder()


CONFLUENT_MAGIC = 0
_CONFLUENT_HEADER = 5


def confluent_avro_decoder(registry: dict[int, dict[str, Any]] | None = None) -> Decoder:
    """A decoder for Confluent-framed Avro; writer schemas by id (default: ``schemas/registry.json``).

    Each id's writer schema is checked against the contract's schema once, on its first record: a compatible one
    (an added optional field, say) is decoded with writer -> reader resolution; an incompatible one makes every
    record with that id an ``incompatible_schema`` dead letter, without decoding its body.
    """
    writers = schemas.confluent_schemas() if registry is None else registry
    known = ", ".join(str(i) for i in sorted(writers)) or "none"
    decoders: dict[int, Decoder] = {}

    def decode_confluent_avro(payload: bytes) -> Decoded | Rejection:
        if len(payload) < _CONFLUENT_HEADER or payload[0] != CONFLUENT_MAGIC:
            first = f"0x{payload[0]:02x}" if payload else "nothing"
            return Rejection(
                dl.MALFORMED_AVRO,
                None,
                f"not Confluent wire format: expected magic byte 0x00 and a 4-byte schema id, got {first} "
                f"({len(payload)} bytes)",
            )
        schema_id = int.from_bytes(payload[1:_CONFLUENT_HEADER], "big")
        decode = decoders.get(schema_id)
        if decode is None:
            if schema_id not in writers:
                return Rejection(
                    dl.MALFORMED_AVRO, None, f"unknown Confluent schema id {schema_id} (known ids: {known})"
                )
            decode = decoders[schema_id] = writer_decoder(writers[schema_id], f"Confluent schema id {schema_id}")
        return decode(payload[_CONFLUENT_HEADER:])

    return decode_confluent_avro


def writer_decoder(writer_schema: dict[str, Any], name: str) -> Decoder:
    """The decoder for records written with ``writer_schema`` (called ``name`` in messages), checked once.

    Compatible with the contract's schema: ``avro_decoder`` (resolution). Incompatible: a decoder that rejects
    every record as ``incompatible_schema`` with the reason.
    """
    problem = incompatibility(writer_schema, schemas.event_avro_schema())
    if problem is None:
        return avro_decoder(writer_schema)
    rejection = Rejection(
        dl.INCOMPATIBLE_SCHEMA, None, f"{name} cannot be read as the event contract's schema: {problem}"[:500]
    )
    return lambda _payload: rejection


def decoder_for(fmt: str) -> Decoder:
    if fmt == FORMAT_JSON:
        return decode_json
    if fmt == FORMAT_AVRO:
        return decode_avro
    if fmt == FORMAT_CONFLUENT_AVRO:
        return confluent_avro_decoder()
    raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def parse_record(record: SourceRecord, decode: Decoder, max_payload_bytes: int) -> Decoded | Rejection:
    """Size check, then the decoder (or the object a container source already decoded)."""
    if len(record.payload) > max_payload_bytes:
        return Rejection(
            dl.PAYLOAD_TOO_LARGE,
            None,
            f"payload is {len(record.payload)} bytes; the limit is {max_payload_bytes}",
        )
    if record.decoded is not None:
        return record.decoded
    return decode(record.payload)
