"""The element types that flow between the pipeline's transforms, with fast Beam coders.

Beam's default coder pickles NamedTuples element by element; registering a tuple-based coder for each type
keeps shuffles (dedup state, windowed combine) cheap and deterministic.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from apache_beam import coders


class SourceRecord(NamedTuple):
    """One raw record as read: the bytes exactly as they arrived, and where they came from."""

    payload: bytes
    source: str
    metadata: dict[str, Any] | None = None
    # Set only by sources that decode a container themselves (Avro container files): the decoded object.
    decoded: dict[str, Any] | None = None


class Event(NamedTuple):
    """A valid event (contract v1) plus what a later dead letter would need (raw bytes and origin)."""

    event_id: str
    event_type: str
    user_id: str
    event_time_us: int  # microseconds since the epoch, UTC
    page: str | None
    value: float | int
    properties: dict[str, str] | None
    key: str | None  # the value of --key_field
    payload: bytes
    source: str
    metadata: dict[str, Any] | None
    arrival_us: int  # the source's timestamp of the record (publish time, Kafka timestamp, replay clock)


class _NamedTupleCoder(coders.Coder):
    """Encodes a NamedTuple as the plain tuple of its fields (FastPrimitivesCoder handles those natively)."""

    def __init__(self, tuple_type: type) -> None:
        self._type = tuple_type
        self._tuple_coder = coders.FastPrimitivesCoder()

    def encode(self, value: tuple) -> bytes:
        return self._tuple_coder.encode(tuple(value))

    def decode(self, encoded: bytes) -> Any:
        return self._type._make(self._tuple_coder.decode(encoded))

    def is_deterministic(self) -> bool:
        return False  # dict fields (metadata, properties) have no canonical order

    def to_type_hint(self):
        return self._type

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._type is other._type  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash((type(self), self._type))


class SourceRecordCoder(_NamedTupleCoder):
    def __init__(self) -> None:
        super().__init__(SourceRecord)


class EventCoder(_NamedTupleCoder):
    def __init__(self) -> None:
        super().__init__(Event)


coders.registry.register_coder(SourceRecord, SourceRecordCoder)
coders.registry.register_coder(Event, EventCoder)
