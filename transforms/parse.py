"""Decoding raw record bytes into a JSON-like object: size limit, UTF-8, JSON or Avro syntax, top-level object.

The decoders are plain functions (used by the Beam transform, the benchmark's plain loop and the fuzz tests) and
never raise on bad input: they return a ``Rejection`` with the first failing check of the contract's order.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
import fastavro
import orjson

import schemas
from transforms import dead_letter as dl
from transforms.dead_letter import Rejection
from transforms.records import SourceRecord

FORMAT_JSON = "json"
FORMAT_AVRO = "avro"
FORMATS = (FORMAT_JSON, FORMAT_AVRO)

METRICS_NAMESPACE = "realtime_analytics"

Decoded = dict[str, Any]
Decoder = Callable[[bytes], "Decoded | Rejection"]


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def _strict_stdlib_loads(text: str) -> Any:
    """The slow, exact fallback: accepts all of RFC 8259 (huge integers, 1e999) but no NaN/Infinity."""
    return json.loads(text, parse_constant=_reject_constant)


def _has_lone_surrogate(value: Any) -> bool:
    """True if a decoded JSON value holds a lone UTF-16 surrogate (``"\\ud800"``), which is not Unicode text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
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
    writer = writer_schema or reader_schema
    resolve = None if writer is reader_schema else reader_schema

    def decode_avro(payload: bytes) -> Decoded | Rejection:
        buffer = io.BytesIO(payload)
        try:
            obj = fastavro.schemaless_reader(buffer, writer, resolve)
        except UnicodeDecodeError as exc:
            return Rejection(dl.INVALID_ENCODING, None, f"Avro string is not valid UTF-8: {exc.reason}")
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types (EOFError, IndexError...) on garbage
            return Rejection(dl.MALFORMED_AVRO, None, f"malformed Avro: {type(exc).__name__}: {exc}"[:500])
        if buffer.tell() != len(payload):
            return Rejection(
                dl.MALFORMED_AVRO,
                None,
                f"malformed Avro: {len(payload) - buffer.tell()} trailing bytes after the record",
            )
        return avro_nulls_as_absent(obj)

    return decode_avro


def decode_avro(payload: bytes) -> Decoded | Rejection:
    """Schemaless Avro binary of ``schemas/event.avsc`` -> dict, or the rejection."""
    return _DEFAULT_AVRO(payload)


_DEFAULT_AVRO = avro_decoder()


def decoder_for(fmt: str) -> Decoder:
    if fmt == FORMAT_JSON:
        return decode_json
    if fmt == FORMAT_AVRO:
        return decode_avro
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


class _ParseDoFn(beam.DoFn):
    def __init__(self, fmt: str, max_payload_bytes: int) -> None:
        self._fmt = fmt
        self._max_payload_bytes = max_payload_bytes
        self._read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_read")

    def setup(self) -> None:
        self._decode = decoder_for(self._fmt)

    def process(self, record: SourceRecord) -> Iterator[Any]:
        self._read.inc()
        result = parse_record(record, self._decode, self._max_payload_bytes)
        if type(result) is Rejection:
            yield beam.pvalue.TaggedOutput(
                dl.DEAD_LETTER_TAG,
                dl.dead_letter(result, record.payload, record.source, record.metadata, dl.STAGE_PARSE),
            )
        else:
            yield (result, record)


class ParseEvents(beam.PTransform):
    """SourceRecord -> (decoded object, SourceRecord); rejects go to the ``dead_letter`` output (stage=parse)."""

    def __init__(self, fmt: str = FORMAT_JSON, max_payload_bytes: int = 1 << 20) -> None:
        super().__init__()
        decoder_for(fmt)  # fail at construction on an unknown format
        self._fmt = fmt
        self._max_payload_bytes = max_payload_bytes

    def expand(self, records):
        return records | "Decode" >> beam.ParDo(_ParseDoFn(self._fmt, self._max_payload_bytes)).with_outputs(
            dl.DEAD_LETTER_TAG, main="parsed"
        )
