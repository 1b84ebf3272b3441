"""Can data written with one Avro schema be read with another? Avro's schema-resolution rules, checked up front.

fastavro resolves a writer schema to a reader schema lazily, field by field, while it decodes, and fails on the
first record that reaches an incompatible part (or never, if no record does). ``incompatibility`` applies the same
rules (the Avro specification's "Schema Resolution", as fastavro implements them) to the schemas themselves, once:
every value the writer schema can produce must be readable, so a writer union branch the reader cannot take is
an incompatibility even if no record uses it (what a schema registry's BACKWARD check says).

Rules: primitives must be equal or promote (int -> long, float, double; long -> float, double; float -> double;
string <-> bytes); named types match by unqualified name or a reader alias; a record's reader fields are read from
the writer field of the same name (or an alias) and need a default when the writer has none, writer-only fields
are skipped; enums need every writer symbol in the reader or a reader default; fixed sizes must be equal; arrays
and maps resolve their items and values; a writer union needs every branch readable, a reader union the first
branch that matches the writer.
"""

from __future__ import annotations

from typing import Any

import fastavro

_PRIMITIVES = frozenset(("null", "boolean", "int", "long", "float", "double", "bytes", "string"))
_NAMED = frozenset(("record", "error", "enum", "fixed"))
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


def parsed_schema(schema: Any) -> Any:
    """``schema`` as fastavro.parse_schema returns it (parsed once: an already parsed schema is returned as is)."""
    if isinstance(schema, dict) and schema.get("__fastavro_parsed"):
        return schema
    return fastavro.parse_schema(schema)


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "union [" + ", ".join(_describe(s) for s in schema) + "]"
    if isinstance(schema, dict):
        kind = schema["type"]
        return f"{kind} {schema['name']}" if kind in _NAMED else str(kind)
    return str(schema)


def _at(path: str) -> str:
    return f"field '{path}'" if path else "the record"


def _unqualified(name: str) -> str:
    return name.rsplit(".", 1)[-1]


class _Resolver:
    def __init__(self, writer: Any, reader: Any) -> None:
        self._writer_names = writer.get("__named_schemas", {}) if isinstance(writer, dict) else {}
        self._reader_names = reader.get("__named_schemas", {}) if isinstance(reader, dict) else {}
        self._in_progress: set[tuple[str, str]] = set()  # recursive named types: assume compatible while checking

    def _resolve(self, schema: Any, names: dict[str, Any]) -> Any:
        """A named-type reference replaced by its definition; ``{"type": "int", ...}`` reduced to ``int``."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return names.get(schema, schema)
        if isinstance(schema, dict) and schema.get("type") in _PRIMITIVES:
            return schema["type"]  # logical types read as their underlying type
        return schema

    def kind(self, schema: Any) -> str:
        if isinstance(schema, list):
            return "union"
        return schema["type"] if isinstance(schema, dict) else schema

    def _names_match(self, writer: dict[str, Any], reader: dict[str, Any]) -> bool:
        aliases = reader.get("aliases", [])
        w_name = writer["name"]
        return (
            _unqualified(w_name) == _unqualified(reader["name"]) or w_name in aliases or _unqualified(w_name) in aliases
        )

    def matches(self, writer: Any, reader: Any) -> bool:
        """The shallow match that picks a reader union branch (fastavro's ``match_types``)."""
        writer = self._resolve(writer, self._writer_names)
        reader = self._resolve(reader, self._reader_names)
        w_kind, r_kind = self.kind(writer), self.kind(reader)
        if w_kind == r_kind and w_kind in _PRIMITIVES:
            return True
        if w_kind in _PROMOTIONS and r_kind in _PROMOTIONS[w_kind]:
            return True
        if w_kind == r_kind and w_kind in ("array", "map"):
            return True
        if w_kind in _NAMED and r_kind in _NAMED and (w_kind == r_kind or {w_kind, r_kind} <= {"record", "error"}):
            return self._names_match(writer, reader)
        return False

    def check(self, writer: Any, reader: Any, path: str) -> str | None:
        """None if every ``writer`` value can be read as ``reader``; otherwise what cannot, and where."""
        writer = self._resolve(writer, self._writer_names)
        reader = self._resolve(reader, self._reader_names)
        w_kind, r_kind = self.kind(writer), self.kind(reader)
        if w_kind == "union":
            for branch in writer:
                problem = self.check(branch, reader, path)
                if problem:
                    return problem
            return None
        if r_kind == "union":
            for branch in reader:
                if self.matches(writer, branch):
                    return self.check(writer, branch, path)
            return f"{_at(path)}: writer type {_describe(writer)} matches no branch of the reader's {_describe(reader)}"
        if not self.matches(writer, reader):
            return f"{_at(path)}: writer type {_describe(writer)} cannot be read as {_describe(reader)}"
        if w_kind in ("record", "error"):
            return self._check_record(writer, reader, path)
        if w_kind == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                return f"{_at(path)}: enum symbols {missing} are not in the reader's enum {reader['name']} (no default)"
        elif w_kind == "fixed" and writer["size"] != reader["size"]:
            return f"{_at(path)}: fixed size {writer['size']} is not the reader's {reader['size']}"
        elif w_kind == "array":
            return self.check(writer["items"], reader["items"], f"{path}[]")
        elif w_kind == "map":
            return self.check(writer["values"], reader["values"], f"{path}{{}}")
        return None

    def _check_record(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> str | None:
        pair = (writer["name"], reader["name"])
        if pair in self._in_progress:
            return None
        self._in_progress.add(pair)
        try:
            written = {f["name"]: f for f in writer["fields"]}
            for field in reader["fields"]:
                name = field["name"]
                source = written.get(name) or next((written[a] for a in field.get("aliases", []) if a in written), None)
                where = f"{path}.{name}" if path else name
                if source is None:
                    if "default" not in field:
                        return f"{_at(where)}: the reader requires it (no default) and the writer has no such field"
                    continue
                problem = self.check(source["type"], field["type"], where)
                if problem:
                    return problem
            return None
        finally:
            self._in_progress.discard(pair)


def incompatibility(writer_schema: Any, reader_schema: Any) -> str | None:
    """None if everything ``writer_schema`` can write is readable with ``reader_schema``; else the first reason."""
    writer, reader = parsed_schema(writer_schema), parsed_schema(reader_schema)
    return _Resolver(writer, reader).check(writer, reader, "")
