"""The known mix of records the end-to-end tests send through a broker, and what the pipeline must make of it.

Valid events in two minute windows (3-4 minutes ago: late, within the allowed lateness of 600 s), one redelivery of
the first event (dropped as a duplicate), malformed and invalid records, and one event far beyond the allowed
lateness; as JSON or in the Confluent Avro wire format. ``expected_finals`` is the exact final aggregate of each group.
"""

from __future__ import annotations

import io
import json

import fastavro

import schemas
from transforms.timefmt import format_rfc3339_us, now_us

MINUTE_US = 60_000_000


def event_fields(
    event_id: str, at_us: int, user: str, value: int, event_type: str = "click", page: str = "/home"
) -> dict:
    return {
        "event_id": event_id,
        "event_type": event_type,
        "user_id": user,
        "event_time": format_rfc3339_us(at_us),
        "page": page,
        "value": value,
    }


def as_json(fields: dict) -> bytes:
    return json.dumps(fields).encode()


def as_confluent_avro(fields: dict, schema_id: int = 1, magic: bytes = b"\x00") -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schemas.event_avro_schema(), {"properties": None, **fields})
    return magic + schema_id.to_bytes(4, "big") + body.getvalue()


def recent_window() -> int:
    """Start (µs) of the minute window 3-4 minutes ago: its data is late but within the allowed lateness."""
    return (now_us() // MINUTE_US - 4) * MINUTE_US


def mix(fmt: str, window_a: int) -> tuple[list[bytes], dict[bytes, str]]:
    """(valid payloads, bad payload -> the error code its dead letter must carry)."""
    window_b = window_a + MINUTE_US
    too_late_at = window_a - 30 * MINUTE_US  # far beyond the allowed lateness of 600 s
    events = [
        event_fields("a1", window_a + 1_000_000, "u1", 1),
        event_fields("a2", window_a + 2_000_000, "u2", 2),
        event_fields("a3", window_a + 3_000_000, "u1", 4),
        event_fields("b1", window_b + 1_000_000, "u3", 8),
        event_fields("b2", window_b + 5_000_000, "u3", 16, event_type="purchase"),
    ]
    if fmt == "json":
        valid = [as_json(e) for e in events]
        bad = {
            b'{"event_id": "m1", ': "malformed_json",
            b'{"event_id":"t1","event_type":"click","user_id":7,"event_time":"2024-01-01T00:00:00Z"}': "invalid_type",
            b"\xff\xfe": "invalid_encoding",
            as_json(event_fields("late1", too_late_at, "u9", 99)): "too_late",
        }
    else:
        valid = [as_confluent_avro(e) for e in events]
        bad = {
            as_confluent_avro(event_fields("x1", window_a, "u1", 1), magic=b"\x01"): "malformed_avro",  # bad magic
            as_confluent_avro(event_fields("x2", window_a, "u1", 1), schema_id=42): "malformed_avro",  # unknown id
            b"\x00\x00\x00\x00\x01\xff\xff\xff": "malformed_avro",  # truncated body
            as_confluent_avro(event_fields("v1", window_a, "u1", 1, event_type="Click!")): "invalid_value",
            as_confluent_avro(event_fields("late1", too_late_at, "u9", 99)): "too_late",
        }
    return valid, bad


def expected_finals(window_a: int) -> dict[tuple, tuple]:
    """(window_start, event_type, key) -> (event_count, value_sum, distinct_users) the final panes must hold."""
    window_b = window_a + MINUTE_US
    return {
        (format_rfc3339_us(window_a), "click", "/home"): (3, 7.0, 2),
        (format_rfc3339_us(window_b), "click", "/home"): (1, 8.0, 1),
        (format_rfc3339_us(window_b), "purchase", "/home"): (1, 16.0, 1),
    }


def produce(
    bootstrap: str,
    topic: str,
    payloads: list[bytes],
    partitions: int = 1,
    timestamps_ms: list[int] | None = None,
    max_message_bytes: int | None = None,
) -> dict[bytes, tuple[int, int]]:
    """Produces in order (round-robin over ``partitions``; record timestamps ``timestamps_ms`` if given, else the
    producer's clock; records up to ``max_message_bytes`` if given, else librdkafka's 1 MB); returns payload ->
    (partition, offset) of its (last) delivery."""
    from confluent_kafka import Producer

    delivered: dict[bytes, tuple[int, int]] = {}

    def on_delivery(err, msg) -> None:
        assert err is None, err
        delivered[msg.value()] = (msg.partition(), msg.offset())

    config = {"bootstrap.servers": bootstrap, "enable.idempotence": True}
    if max_message_bytes:
        config["message.max.bytes"] = max_message_bytes
    producer = Producer(config)
    for index, payload in enumerate(payloads):
        producer.produce(
            topic,
            value=payload,
            key=b"test-key",
            partition=index % partitions,
            timestamp=timestamps_ms[index] if timestamps_ms else 0,  # 0: the producer's clock
            on_delivery=on_delivery,
        )
    assert producer.flush(120) == 0
    return delivered
