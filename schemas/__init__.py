"""The single source of truth for the event contract and the output table schemas.

Everything that needs a schema (parsers, validators, sinks, table provisioning, the flex template docs)
loads it from here; nothing else spells out field lists.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

import fastavro

AGGREGATES_TABLE = "aggregates"
DEAD_LETTER_TABLE = "dead_letter"


def _read(name: str) -> str:
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


@cache
def event_avro_schema() -> dict[str, Any]:
    """The parsed Avro schema of the event contract (``schemas/event.avsc``)."""
    return fastavro.parse_schema(json.loads(_read("event.avsc")))


@cache
def confluent_schemas() -> dict[int, dict[str, Any]]:
    """Confluent schema id -> parsed Avro writer schema, from ``schemas/registry.json`` (id -> .avsc file name)."""
    registry = json.loads(_read("registry.json"))
    return {
        int(schema_id): event_avro_schema() if name == "event.avsc" else fastavro.parse_schema(json.loads(_read(name)))
        for schema_id, name in registry.items()
    }


@cache
def bigquery_schema(table: str) -> tuple[dict[str, Any], ...]:
    """The BigQuery JSON schema (list of field dicts) of ``aggregates`` or ``dead_letter``."""
    return tuple(json.loads(_read(f"{table}.bq.json")))


def bigquery_field_names(table: str) -> tuple[str, ...]:
    return tuple(field["name"] for field in bigquery_schema(table))
