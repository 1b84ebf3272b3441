"""Pub/Sub (pstest) -> streaming pipeline -> BigQuery emulator: exact final aggregates and every dead letter.

The known mix: valid events in two windows, a duplicate publish and a redelivery of the same event, malformed,
invalid and too-late records. Aggregates and dead letters both land in provisioned BigQuery tables, through each
write method (insertAll over REST, the Storage Write API over gRPC).
"""

from __future__ import annotations

import base64
import uuid

import pytest

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from tests.integration.event_mix import MINUTE_US, as_json, event_fields, recent_window
from tests.integration.pubsub_jobs import PROJECT
from tests.integration.results import wait_for_bigquery
from tests.integration.test_bigquery_sink import METHODS, endpoint_args
from transforms.timefmt import format_rfc3339_us


@pytest.mark.parametrize("method", METHODS)
def test_pubsub_to_bigquery_exact_aggregates_and_dead_letters(pubsub_emulator, dataset, monkeypatch, method):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    publisher, subscriber = pubsub_emulator.publisher(), pubsub_emulator.subscriber()
    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"projects/{PROJECT}/topics/in-{suffix}", f"projects/{PROJECT}/subscriptions/in-{suffix}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)

    window_a = recent_window()
    window_b = window_a + MINUTE_US
    valid = [
        as_json(event_fields("a1", window_a + 1_000_000, "u1", 1)),
        as_json(event_fields("a2", window_a + 2_000_000, "u2", 2, page="/cart")),
        as_json(event_fields("a3", window_a + 3_000_000, "u1", 4)),
        as_json(event_fields("b1", window_b + 1_000_000, "u3", 8)),
    ]
    bad = {
        b'{"event_id": "m1", ': "malformed_json",
        b'{"event_id":"t1","event_type":"Click","user_id":"u","event_time":"2024-01-01T00:00:00Z"}': "invalid_value",
        b"[1, 2, 3]": "not_an_object",
        as_json(event_fields("late1", window_a - 30 * MINUTE_US, "u9", 99)): "too_late",
    }
    spec = resolve(
        [
            f"--source=pubsub://{subscription}",
            f"--sink={dataset.uri('aggregates')}",
            f"--dead_letter_sink={dataset.uri('dead_letter')}",
            *endpoint_args(dataset.emulator, method),
            "--allowed_lateness=600",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    expected = {
        (format_rfc3339_us(window_a), "click", "/home"): (2, 5.0, 1),
        (format_rfc3339_us(window_a), "click", "/cart"): (1, 2.0, 1),
        (format_rfc3339_us(window_b), "click", "/home"): (1, 8.0, 1),
    }
    try:
        # a1 twice: a duplicate publish (new message id) of the same event, dropped by the event_id dedup.
        for payload in [*valid, valid[0], *bad]:
            publisher.publish(topic, payload, origin="e2e").result(timeout=30)
        finals, dead = wait_for_bigquery(dataset, expected, len(bad), timeout_s=120)
    finally:
        result.cancel()

    assert finals == expected
    assert {base64.b64decode(row["payload"]): row["error_code"] for row in dead} == bad  # the original bytes
    for row in dead:
        assert row["source"] == subscription and row["failed_at"].endswith("Z")
        assert row["stage"] == {"too_late": "window", "invalid_value": "validate"}.get(row["error_code"], "parse")
