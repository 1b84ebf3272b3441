"""A strict walk over one Avro binary datum: what fastavro lets through that the Avro specification does not.

fastavro reads a union's branch index as a Python list index, so a negative index (-1 = the last branch) decodes
into a plausible value instead of failing; Java's decoder rejects it. ``first_violation`` walks the bytes with the
writer schema and names the first such violation (a union or enum index out of range, a negative length or block
size, a varint longer than its type allows), or returns None for a datum every conforming reader accepts.

It is the slow, exact check. ``canonical_or_violation`` is what the decoder calls: a datum that re-encodes to its
own bytes is canonical (fastavro's writer never writes a negative index), so only the rare non-canonical datum,
e.g. a map written in several blocks by another writer, pays for the walk.
"""

from __future__ import annotations

import io
from typing import Any

import fastavro

from transforms import dead_letter as dl
from transforms.dead_letter import Rejection

_MAX_VARINT_BYTES = {"int": 5, "long": 10}
_FIXED_WIDTH = {"float": 4, "double": 8}


class _Violation(Exception):
    """The datum breaks the specification; the message says where and how."""

    def __init__(self, message: str, code: str = dl.MALFORMED_AVRO) -> None:
        super().__init__(message)
        self.code = code


class _Walker:
    def __init__(self, data: bytes, named: dict[str, Any]) -> None:
        self._data = data
        self._pos = 0
        self._named = named

    def _varint(self, kind: str, where: str) -> int:
        result = shift = 0
        for count in range(1, _MAX_VARINT_BYTES[kind] + 1):
            if self._pos >= len(self._data):
                raise _Violation(f"{where}: the data ends inside a varint")
            byte = self._data[self._pos]
            self._pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return (result >> 1) ^ -(result & 1)
            if count == _MAX_VARINT_BYTES[kind]:
                break
        raise _Violation(f"{where}: {kind} varint longer than {_MAX_VARINT_BYTES[kind]} bytes")

    def _skip(self, size: int, where: str) -> None:
        if size < 0:
            raise _Violation(f"{where}: negative length {size}")
        if self._pos + size > len(self._data):
            raise _Violation(f"{where}: length {size} runs past the end of the data")
        self._pos += size

    def _blocks(self, where: str, item: Any) -> None:
        while True:
            count = self._varint("long", where)
            if count == 0:
                return
            if count < 0:
                count = -count
                size = self._varint("long", where)
                if size < 0:
                    raise _Violation(f"{where}: negative block size {size}")
            for _ in range(count):
                item()

    def walk(self, schema: Any, where: str) -> None:
        if isinstance(schema, list):
            index = self._varint("long", where)
            if not 0 <= index < len(schema):
                raise _Violation(f"{where}: union branch index {index} outside 0..{len(schema) - 1}")
            self.walk(schema[index], where)
            return
        if isinstance(schema, str):
            schema = self._named.get(schema, schema)
        kind = schema["type"] if isinstance(schema, dict) else schema
        if kind == "null":
            return
        if kind == "boolean":
            self._skip(1, where)
        elif kind in _MAX_VARINT_BYTES:
            self._varint(kind, where)
        elif kind in _FIXED_WIDTH:
            self._skip(_FIXED_WIDTH[kind], where)
        elif kind == "bytes":
            self._skip(self._varint("long", where), where)
        elif kind == "string":
            size = self._varint("long", where)
            start = self._pos
            self._skip(size, where)
            try:
                self._data[start : self._pos].decode("utf-8")
            except UnicodeDecodeError as exc:
                # Also in a writer-only field that resolution skips: JSON reports invalid UTF-8 anywhere, too.
                raise _Violation(f"Avro string is not valid UTF-8: {exc.reason}", dl.INVALID_ENCODING) from None
        elif kind == "fixed":
            self._skip(schema["size"], where)
        elif kind == "enum":
            index = self._varint("int", where)
            if not 0 <= index < len(schema["symbols"]):
                raise _Violation(f"{where}: enum index {index} outside 0..{len(schema['symbols']) - 1}")
        elif kind == "array":
            self._blocks(where, lambda: self.walk(schema["items"], where))
        elif kind == "map":

            def entry() -> None:
                self._skip(self._varint("long", where), where)
                self.walk(schema["values"], where)

            self._blocks(where, entry)
        elif kind in ("record", "error"):
            for field in schema["fields"]:
                self.walk(field["type"], f"{where}.{field['name']}" if where else field["name"])
        else:
            # A logical type or an unknown kind: the plain type underneath decides the encoding.
            self.walk(schema.get("type") if isinstance(schema, dict) else "null", where)


def first_violation(payload: bytes, writer_schema: dict[str, Any]) -> Rejection | None:
    """The first place ``payload`` breaks the Avro specification for ``writer_schema`` (parsed), or None.

    ``malformed_avro``, or ``invalid_encoding`` for a string that is not UTF-8.
    """
    walker = _Walker(payload, writer_schema.get("__named_schemas", {}))
    try:
        walker.walk(writer_schema, "")
    except _Violation as exc:
        message = str(exc) if exc.code == dl.INVALID_ENCODING else f"malformed Avro: {exc}"
        return Rejection(exc.code, None, message[:500])
    return None


def canonical_or_violation(payload: bytes, writer_schema: dict[str, Any], datum: dict[str, Any]) -> Rejection | None:
    """None if ``payload`` is valid Avro for ``writer_schema``, given fastavro already decoded it to ``datum``.

    ``datum`` must be the writer-shaped record (decoded without resolution).
    """
    out = io.BytesIO()
    fastavro.schemaless_writer(out, writer_schema, datum)
    if out.getvalue() == payload:
        return None
    return first_violation(payload, writer_schema)
