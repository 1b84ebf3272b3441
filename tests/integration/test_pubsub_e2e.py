"""Pub/Sub (Google's pstest emulator, a real gRPC server) -> streaming pipeline -> aggregates + Pub/Sub dead letters.

A known mix is published: valid events in two windows, a redelivered duplicate, malformed and invalid records,
and one event far later than the allowed lateness. The test then checks the exact final aggregates and reads every
dead letter back from its topic, byte for byte.
"""

from __future__ import annotations

import base64
import gc
import json
import time
from collections import Counter

import pytest

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from pipelines.summary import read_rows
from tests.integration.event_mix import MINUTE_US, as_json, event_fields, expected_finals, mix, recent_window
from tests.integration.pubsub_jobs import create_names, pull_all
from tests.integration.results import final_counts
from transforms.timefmt import format_rfc3339_us, now_us


@pytest.fixture
def topics(pubsub_emulator, monkeypatch):
    return create_names(pubsub_emulator, monkeypatch, prefix="events")


def _wait_for_temporary_subscription(publisher, topic: str, known: str, deadline: float) -> None:
    """A topic source subscribes when the job starts: publish only once that subscription exists."""
    while time.monotonic() < deadline:
        if [s for s in publisher.list_topic_subscriptions(topic=topic) if s != known]:
            return
        time.sleep(0.2)
    raise AssertionError(f"the pipeline never subscribed to {topic}")


@pytest.mark.parametrize("read_from", ["subscription", "topic"])
def test_pubsub_stream_gives_exact_aggregates_and_every_dead_letter(topics, tmp_path, read_from):
    publisher, subscriber, names = topics
    source = names["events_sub"] if read_from == "subscription" else names["events"]
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    spec = resolve(
        [
            f"--source=pubsub://{source}",
            f"--sink={tmp_path / 'aggregates'}",
            f"--dead_letter_sink=pubsub://{names['dlq']}",
            "--allowed_lateness=600",
            "--streaming",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    try:
        if read_from == "topic":
            _wait_for_temporary_subscription(publisher, names["events"], names["events_sub"], time.monotonic() + 60)
        for payload in [*valid, valid[0], *bad]:  # valid[0] again: a redelivery, dropped as a duplicate
            publisher.publish(names["events"], payload, origin="test").result(timeout=30)
        deadline = time.monotonic() + 90
        dead = pull_all(subscriber, names["dlq_sub"], len(bad), deadline)
        expected = expected_finals(window_a)
        finals = {}
        while time.monotonic() < deadline:
            finals = final_counts(read_rows(str(tmp_path / "aggregates"))[1])
            if finals == expected:
                break
            time.sleep(0.5)
    finally:
        result.cancel()
        # Let Beam's finalizer delete its temporary subscription now, while the emulator still runs (at
        # interpreter exit it would retry against a stopped emulator for a minute).
        del pipeline, result
        gc.collect()

    assert finals == expected
    assert len(dead) == len(bad)
    by_payload = {}
    for message in dead:
        row = json.loads(message.data)
        by_payload[base64.b64decode(row["payload"])] = row
        assert message.attributes["error_code"] == row["error_code"]
        assert row["source"] == source
        assert row["source_metadata"]["attributes"] == {"origin": "test"}
        assert row["source_metadata"]["message_id"] and row["source_metadata"]["publish_time"].endswith("Z")
    assert {payload: row["error_code"] for payload, row in by_payload.items()} == bad  # byte for byte
    assert Counter(row["stage"] for row in by_payload.values()) == {"parse": 2, "validate": 1, "window": 1}


def test_publish_time_is_the_event_time_when_asked(topics, tmp_path):
    """--timestamp_source=publish_time: windows follow the server's publish time, not the payloads' event_time
    (two hours old: as payload time every record would be too late and dead-lettered)."""
    publisher, subscriber, names = topics
    stale = (now_us() // MINUTE_US - 120) * MINUTE_US
    events = [as_json(event_fields(f"p{i}", stale + i * 1_000_000, f"u{i}", i)) for i in range(1, 5)]
    spec = resolve(
        [
            f"--source=pubsub://{names['events_sub']}",
            f"--sink={tmp_path / 'aggregates'}",
            f"--dead_letter_sink={tmp_path / 'dead_letter'}",
            "--timestamp_source=publish_time",
            "--early_firing=2",
            "--streaming",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    first_minute = now_us() // MINUTE_US * MINUTE_US
    finals: dict = {}
    try:
        for payload in events:
            publisher.publish(names["events"], payload).result(timeout=30)
        last_minute = now_us() // MINUTE_US * MINUTE_US
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            finals = final_counts(read_rows(str(tmp_path / "aggregates"))[1])
            if sum(count for count, _, _ in finals.values()) == len(events):
                break
            time.sleep(0.5)
    finally:
        result.cancel()
    assert sum(count for count, _, _ in finals.values()) == len(events)
    assert sum(value for _, value, _ in finals.values()) == 10.0
    # The windows are the minutes the messages were published in.
    starts = {start for start, _, _ in finals}
    assert starts and starts <= {format_rfc3339_us(m) for m in range(first_minute, last_minute + 1, MINUTE_US)}
    assert read_rows(str(tmp_path / "dead_letter"))[1] == []  # nothing too late
