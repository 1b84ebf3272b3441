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


class RecordBatch(NamedTuple):
    """Many raw records of one source, as one element: bounded input is processed in batches (docs/benchmarks.md).

    Per-record fields are lists parallel to ``payloads``; None means "none for any record" (JSON-lines files have
    no metadata, and only containers decode records themselves).
    """

    source: str
    payloads: list[bytes]
    metadata: list[dict[str, Any] | None] | None = None
    decoded: list[Any] | None = None  # per record: the container's decoded object (or its Rejection), or None
    arrivals: list[int] | None = None  # per record: the source's timestamp (µs); None: the element's timestamp

    def record(self, index: int) -> SourceRecord:
        """One record of the batch, as the per-record path sees it."""
        return SourceRecord(
            self.payloads[index],
            self.source,
            None if self.metadata is None else self.metadata[index],
            None if self.decoded is None else self.decoded[index],
        )

    @staticmethod
    def of(record: SourceRecord) -> RecordBatch:
        return RecordBatch(
            record.source,
            [record.payload],
            None if record.metadata is None else [record.metadata],
            None if record.decoded is None else [record.decoded],
        )


# A valid event as dedup, the too-late filter and the aggregates see it: a plain tuple (cheap to build, to pack and to
# ship through the dedup shuffle) of what they need, plus what a dead letter of a later step needs (arrival, bytes).
Row = tuple[str, int, str, "str | None", str, "int | float", int, bytes, "dict[str, Any] | None"]
EVENT_ID, EVENT_TIME_US, EVENT_TYPE, KEY, USER_ID, VALUE, ARRIVAL_US, PAYLOAD, METADATA = range(9)


class RowBatch(NamedTuple):
    """Rows of one source (a batch's valid events, or the part of them one dedup shard holds)."""

    source: str
    rows: list[Row]

    def record(self, index: int) -> SourceRecord:
        """The record a row came from, for its dead letter (its bytes, source and metadata)."""
        return row_record(self.source, self.rows[index])


def row_record(source: str, row: Row) -> SourceRecord:
    """The record a row came from, for its dead letter (its bytes, source and metadata)."""
    return SourceRecord(row[PAYLOAD], source, row[METADATA])


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


class RecordBatchCoder(_NamedTupleCoder):
    def __init__(self) -> None:
        super().__init__(RecordBatch)


coders.registry.register_coder(SourceRecord, SourceRecordCoder)
coders.registry.register_coder(RecordBatch, RecordBatchCoder)
coders.registry.register_coder(Event, EventCoder)


class RowBatchCoder(_NamedTupleCoder):
    def __init__(self) -> None:
        super().__init__(RowBatch)


coders.registry.register_coder(RowBatch, RowBatchCoder)
