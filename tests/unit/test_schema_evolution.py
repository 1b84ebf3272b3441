"""Schema evolution: records written with a newer (or older) compatible writer schema parse; an incompatible writer
schema is dead-lettered as ``incompatible_schema`` with the reason, decided once per schema id (or file).

Confluent wire format (``--format=confluent-avro``): the schema id names the writer schema (schemas/registry.json).
Avro container files: the header carries it. Plain ``--format=avro`` (schemaless, no id) cannot know it.
"""

from __future__ import annotations

import copy
import io
import json
import struct
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import pytest

import schemas
from pipelines.streaming_analytics import run
from transforms import avro_compat, parse
from transforms import dead_letter as dl
from transforms.avro_compat import incompatibility
from transforms.dead_letter import Rejection
from transforms.io.files import read_avro_container
from transforms.parse import confluent_avro_decoder, decode_avro, decoder_for, parse_record
from transforms.records import Event, SourceRecord
from transforms.validate import EventValidator

NOW_US = 1_700_000_000_000_000
V1: dict[str, Any] = json.loads(resources.files("schemas").joinpath("event.avsc").read_text(encoding="utf-8"))
V2: dict[str, Any] = json.loads(resources.files("schemas").joinpath("event_v2.avsc").read_text(encoding="utf-8"))
BASE: dict[str, Any] = {
    "event_id": "e-1",
    "event_type": "click",
    "user_id": "u-1",
    "event_time": "2023-11-14T22:00:00Z",
    "page": "/p",
    "value": 3,
    "properties": {"k": "v"},
}


def changed(schema: dict[str, Any] = V1, **fields: Any) -> dict[str, Any]:
    """``schema`` with fields replaced (a dict: the field's new definition), removed (None) or added (new name)."""
    out = copy.deepcopy(schema)
    names = [f["name"] for f in out["fields"]]
    for name, definition in fields.items():
        if name in names:
            index = [f["name"] for f in out["fields"]].index(name)
            if definition is None:
                del out["fields"][index]
            else:
                out["fields"][index] = {"name": name, **definition}
        else:
            out["fields"].append({"name": name, **definition})
    return out


def body(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def framed(schema_id: int, payload: bytes) -> bytes:
    return b"\x00" + struct.pack(">I", schema_id) + payload


def outcome(payload: bytes, decode=None, record: SourceRecord | None = None) -> Event | Rejection:
    record = record or SourceRecord(payload, "test", None)
    decoded = parse_record(record, decode or decoder_for("confluent-avro"), 1 << 20)
    if type(decoded) is Rejection:
        return decoded
    return EventValidator(clock=lambda: NOW_US).validate(decoded, record)


# ---------------------------------------------------------------------------------------------------------------
# The compatibility rules
# ---------------------------------------------------------------------------------------------------------------

ENUM = {"type": "enum", "name": "Kind", "symbols": ["a", "b"]}
FIXED = {"type": "fixed", "name": "Hash", "size": 4}

COMPATIBLE = {
    "identical": (V1, V1),
    "added-optional-field": (V2, V1),
    "older-writer-without-optional-fields": (changed(page=None, value=None, properties=None), V1),
    "int-promotes-to-long": (changed(value={"type": ["null", "int", "double"]}), V1),
    "float-promotes-to-double": (changed(value={"type": ["null", "long", "float"]}), V1),
    "writer-not-a-union": (changed(event_time={"type": "long"}, page={"type": "string"}), V1),
    "bytes-read-as-string": (changed(user_id={"type": "bytes"}), V1),
    "logical-type-reads-as-underlying": (
        changed(event_time={"type": {"type": "long", "logicalType": "timestamp-millis"}}),
        V1,
    ),
    "other-namespace-same-name": ({**V1, "namespace": "producer.v9"}, V1),
    "renamed-record-with-reader-alias": ({**V1, "name": "OldEvent"}, {**V1, "aliases": ["OldEvent"]}),
    "renamed-field-with-reader-alias": (
        changed(user_id=None, uid={"type": "string"}),
        changed(user_id={"type": "string", "aliases": ["uid"]}),
    ),
    "enum-subset": (changed(kind={"type": {**ENUM, "symbols": ["a"]}}), changed(kind={"type": ENUM})),
    "enum-with-reader-default": (
        changed(kind={"type": {**ENUM, "symbols": ["a", "z"]}}),
        changed(kind={"type": {**ENUM, "default": "a"}}),
    ),
    "array-items-promote": (
        changed(tags={"type": {"type": "array", "items": "int"}}),
        changed(tags={"type": {"type": "array", "items": "long"}, "default": []}),
    ),
    "fixed-same-size": (changed(hash={"type": FIXED}), changed(hash={"type": FIXED})),
    "named-type-reference": (
        changed(a={"type": ENUM}, b={"type": "Kind"}),
        changed(a={"type": ENUM}, b={"type": ["null", "Kind"], "default": None}),
    ),
}

INCOMPATIBLE = {
    "required-field-removed": (changed(user_id=None), V1, "field 'user_id': the reader requires it"),
    "required-field-type-changed": (
        changed(user_id={"type": "long"}),
        V1,
        "field 'user_id': writer type long cannot be read as string",
    ),
    "union-branch-the-reader-lacks": (
        changed(value={"type": ["null", "long", "double", "string"]}),
        V1,
        "field 'value': writer type string matches no branch of the reader's union [null, long, double]",
    ),
    "long-does-not-narrow-to-int": (
        changed(n={"type": "long"}),
        changed(n={"type": "int"}),
        "field 'n': writer type long",
    ),
    "double-does-not-narrow": (
        changed(value={"type": ["null", "long", "double"]}),
        changed(value={"type": ["null", "long", "float"]}),
        "writer type double",
    ),
    "renamed-record": (
        {**V1, "name": "Order"},
        V1,
        "the record: writer type record realtime_analytics.v1.Order cannot be read",
    ),
    "map-values-changed": (
        changed(properties={"type": ["null", {"type": "map", "values": "long"}]}),
        V1,
        "field 'properties{}': writer type long cannot be read as string",
    ),
    "enum-symbol-missing": (
        changed(kind={"type": {**ENUM, "symbols": ["a", "z"]}}),
        changed(kind={"type": ENUM}),
        "['z']",
    ),
    "fixed-size-changed": (changed(hash={"type": {**FIXED, "size": 8}}), changed(hash={"type": FIXED}), "fixed size 8"),
    "array-items-changed": (
        changed(tags={"type": {"type": "array", "items": "string"}}),
        changed(tags={"type": {"type": "array", "items": "long"}}),
        "field 'tags[]'",
    ),
    "not-a-record": ("string", V1, "the record: writer type string cannot be read as record"),
}


@pytest.mark.parametrize(("writer", "reader"), COMPATIBLE.values(), ids=COMPATIBLE.keys())
def test_compatible(writer: Any, reader: Any) -> None:
    assert incompatibility(writer, reader) is None


@pytest.mark.parametrize(("writer", "reader", "reason"), INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_incompatible(writer: Any, reader: Any, reason: str) -> None:
    problem = incompatibility(writer, reader)
    assert problem is not None and reason in problem, problem


def test_recursive_schemas_terminate() -> None:
    node = {"type": "record", "name": "Node", "fields": [{"name": "next", "type": ["null", "Node"], "default": None}]}
    assert incompatibility(node, node) is None


@pytest.mark.parametrize(
    "case", ["added-optional-field", "older-writer-without-optional-fields", "int-promotes-to-long"]
)
def test_what_is_called_compatible_fastavro_really_reads(case: str) -> None:
    writer, reader = COMPATIBLE[case]
    record = {k: v for k, v in BASE.items() if k in {f["name"] for f in writer["fields"]}}
    decoded = fastavro.schemaless_reader(
        io.BytesIO(body(writer, record)), fastavro.parse_schema(writer), fastavro.parse_schema(reader)
    )
    assert decoded["event_id"] == "e-1"


@pytest.mark.parametrize("case", ["required-field-removed", "required-field-type-changed"])
def test_what_is_called_incompatible_fastavro_cannot_read(case: str) -> None:
    writer, reader, _ = INCOMPATIBLE[case]
    record = {
        **{k: v for k, v in BASE.items() if k != "user_id"},
        **({"user_id": 7} if "user_id" in str(writer) else {}),
    }
    with pytest.raises(Exception):  # noqa: B017, PT011 - fastavro raises SchemaResolutionError or others
        fastavro.schemaless_reader(
            io.BytesIO(body(writer, record)), fastavro.parse_schema(writer), fastavro.parse_schema(reader)
        )


def test_every_schema_in_the_shipped_registry_is_compatible_with_the_contract() -> None:
    registry = schemas.confluent_schemas()
    assert set(registry) >= {1, 2}
    for schema_id, writer in registry.items():
        assert incompatibility(writer, schemas.event_avro_schema()) is None, schema_id


# ---------------------------------------------------------------------------------------------------------------
# Confluent wire format
# ---------------------------------------------------------------------------------------------------------------


def test_newer_schema_id_2_with_an_added_optional_field_parses() -> None:
    v1 = outcome(framed(1, body(V1, BASE)))
    payload = framed(2, body(V2, {**BASE, "session_id": "s-9"}))
    v2 = outcome(payload)
    assert type(v1) is Event and type(v2) is Event
    assert v2._replace(payload=b"") == v1._replace(payload=b"")  # the same event; session_id is read past
    assert v2.payload == payload
    assert type(outcome(framed(2, body(V2, {**BASE, "session_id": None})))) is Event


def test_newer_schema_field_rules_and_byte_faults_still_apply() -> None:
    bad_type = outcome(framed(2, body(V2, {**BASE, "event_type": "Click"})))
    assert (bad_type.code, bad_type.field) == (dl.INVALID_VALUE, "event_type")
    encoded = framed(2, body(V2, {**BASE, "user_id": "u@"}))
    bad_utf8 = outcome(encoded.replace(b"u@", b"u\xff"))
    assert (bad_utf8.code, bad_utf8.field) == (dl.INVALID_ENCODING, None)
    assert outcome(encoded[:-1]).code == dl.MALFORMED_AVRO
    assert outcome(encoded + b"\x00").code == dl.MALFORMED_AVRO


REGISTRY = {
    1: schemas.event_avro_schema(),
    2: fastavro.parse_schema(V2),
    7: fastavro.parse_schema(changed(user_id={"type": "long"})),
    8: fastavro.parse_schema(changed(user_id=None)),
}


@pytest.mark.parametrize(
    ("schema_id", "record", "reason"),
    [
        pytest.param(
            7, {**BASE, "user_id": 42}, "field 'user_id': writer type long cannot be read as string", id="type-changed"
        ),
        pytest.param(
            8,
            {k: v for k, v in BASE.items() if k != "user_id"},
            "field 'user_id': the reader requires it",
            id="field-removed",
        ),
    ],
)
def test_incompatible_writer_schema_is_dead_lettered_with_a_clear_code(
    schema_id: int, record: dict, reason: str
) -> None:
    decode = confluent_avro_decoder(REGISTRY)
    result = outcome(framed(schema_id, body(REGISTRY[schema_id], record)), decode)
    assert type(result) is Rejection
    assert (result.code, result.field) == (dl.INCOMPATIBLE_SCHEMA, None)
    assert result.message.startswith(f"Confluent schema id {schema_id} cannot be read as the event contract's schema: ")
    assert reason in result.message


def test_compatibility_is_decided_once_per_schema_id(monkeypatch) -> None:
    calls: list[Any] = []

    def counting(writer: Any, reader: Any) -> str | None:
        calls.append(writer)
        return avro_compat.incompatibility(writer, reader)

    monkeypatch.setattr(parse, "incompatibility", counting)
    decode = confluent_avro_decoder(REGISTRY)
    assert calls == []  # nothing until an id is used
    good, bad = framed(2, body(V2, BASE)), framed(7, body(REGISTRY[7], {**BASE, "user_id": 1}))
    for _ in range(500):
        assert type(decode(good)) is dict
        assert decode(bad).code == dl.INCOMPATIBLE_SCHEMA
    assert len(calls) == 2


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        pytest.param(b"", dl.MALFORMED_AVRO, id="empty"),
        pytest.param(b"\x00\x00\x00\x00", dl.MALFORMED_AVRO, id="short-header"),
        pytest.param(b"\x01" + framed(7, b"")[1:], dl.MALFORMED_AVRO, id="bad-magic-beats-incompatible"),
        pytest.param(framed(99, b"\x00"), dl.MALFORMED_AVRO, id="unknown-id"),
        pytest.param(framed(7, b"\xff\xfe garbage"), dl.INCOMPATIBLE_SCHEMA, id="incompatible-id-body-never-decoded"),
        pytest.param(framed(7, b"x" * 200), dl.PAYLOAD_TOO_LARGE, id="size-first"),
    ],
)
def test_confluent_check_order(payload: bytes, code: str) -> None:
    record = SourceRecord(payload, "test", None)
    result = parse_record(record, confluent_avro_decoder(REGISTRY), 100)
    assert type(result) is Rejection and result.code == code, result


def test_plain_avro_cannot_know_the_writer_schema() -> None:
    """Schemaless bytes carry no schema: a newer writer's bytes are read as event.avsc and rejected (or misread)."""
    newer = body(V2, {**BASE, "session_id": "s-9"})
    assert decode_avro(newer).code == dl.MALFORMED_AVRO


# ---------------------------------------------------------------------------------------------------------------
# Avro container files
# ---------------------------------------------------------------------------------------------------------------


def container(schema: dict[str, Any], records: list[dict[str, Any]]) -> bytes:
    out = io.BytesIO()
    fastavro.writer(out, fastavro.parse_schema(schema), records)
    return out.getvalue()


def container_outcomes(data: bytes) -> list[Event | Rejection]:
    return [outcome(r.payload, decode_avro, r) for r in read_avro_container("f.avro", data)]


def test_evolved_container_file_parses() -> None:
    records = [{**BASE, "event_id": f"e-{i}", "session_id": f"s-{i}"} for i in range(3)]
    data = container(V2, records)
    results = container_outcomes(data)
    assert [type(r) for r in results] == [Event] * 3
    assert [r.event_id for r in results] == ["e-0", "e-1", "e-2"]
    # the payload keeps everything the producer wrote: it decodes with the file's own schema
    (first, *_) = read_avro_container("f.avro", data)
    assert fastavro.schemaless_reader(io.BytesIO(first.payload), fastavro.parse_schema(V2))["session_id"] == "s-0"


def test_older_container_file_without_optional_fields_parses() -> None:
    older = changed(page=None, value=None, properties=None)
    (result,) = container_outcomes(
        container(older, [{k: BASE[k] for k in ("event_id", "event_type", "user_id", "event_time")}])
    )
    assert type(result) is Event and (result.page, result.value, result.properties) == (None, 0, None)


def test_incompatible_container_file_gives_one_dead_letter_per_record() -> None:
    data = container(changed(user_id={"type": "long"}), [{**BASE, "user_id": i} for i in range(4)])
    records = list(read_avro_container("f.avro", data))
    assert [r.metadata for r in records] == [{"record": i} for i in range(4)]
    for result in container_outcomes(data):
        assert (result.code, result.field) == (dl.INCOMPATIBLE_SCHEMA, None)
        assert result.message == (
            "the file's writer schema cannot be read as the event contract's schema: "
            "field 'user_id': writer type long cannot be read as string"
        )


def test_container_files_end_to_end(tmp_path: Path) -> None:
    """A batch run over three files: the contract's schema, a newer compatible one, an incompatible one."""
    event = {**BASE, "event_time": "2024-01-01T00:00:30Z"}
    (tmp_path / "v1.avro").write_bytes(container(V1, [{**event, "event_id": "a"}, {**event, "event_id": "b"}]))
    (tmp_path / "v2.avro").write_bytes(container(V2, [{**event, "event_id": "c", "session_id": "s"}]))
    (tmp_path / "bad.avro").write_bytes(
        container(changed(user_id={"type": "long"}), [{**event, "event_id": "d", "user_id": 5}])
    )
    summary = run(
        [
            f"--source={tmp_path / '*.avro'}",
            "--format=avro",
            f"--sink={tmp_path / 'out' / 'aggregates'}",
            f"--dead_letter_sink={tmp_path / 'out' / 'dead_letter'}",
        ]
    )
    assert [(r["event_count"], r["value_sum"]) for r in summary.aggregate_rows] == [(3, 9.0)]
    assert [(r["error_code"], r["source_metadata"]) for r in summary.dead_letter_rows] == [
        ("incompatible_schema", {"record": 0})
    ]
    assert summary.conserved()
