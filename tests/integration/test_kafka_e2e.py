"""Kafka (a real Apache Kafka 4.x broker) -> streaming pipeline on Prism -> aggregates + Kafka dead letters.

A known mix is produced to a fresh topic: valid events in two windows, a redelivered duplicate, malformed and invalid
records, and one event far later than the allowed lateness; once as JSON, once in the Confluent Avro wire format.
The pipeline reads it from the earliest offset through Beam's cross-language KafkaIO (Java worker started by
pipelines/local_run/jars.py, Prism built by pipelines/runners.py), and the test checks the exact final aggregates and
reads
every dead letter back from its topic: payload bytes, partition/offset metadata, key = error code.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import LaunchSpec, resolve
from pipelines.summary import read_rows
from services.kafka import create_topics
from tests.integration.event_mix import MINUTE_US, as_json, event_fields, mix, produce
from tests.integration.results import final_counts, wait_for_bigquery
from transforms.timefmt import format_rfc3339_us, now_us

DEADLINE_S = 110


@pytest.fixture
def topics(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    return bootstrap, create_topics(bootstrap, "events", "dlq")


@pytest.mark.parametrize("fmt", ["json", "confluent-avro"])
def test_kafka_stream_gives_exact_aggregates_and_every_dead_letter(topics, tmp_path, fmt):
    bootstrap, names = topics
    window_a = (now_us() // MINUTE_US - 4) * MINUTE_US  # a minute window 3-4 minutes ago: late, within lateness
    window_b = window_a + MINUTE_US
    valid, bad = mix(fmt, window_a)
    # valid[0] again: a redelivery, dropped as a duplicate.
    delivered = produce(bootstrap, names["events"], [*valid, valid[0], *bad])
    source = f"kafka://{bootstrap}/{names['events']}"
    spec = resolve(
        [
            f"--source={source}",
            f"--format={fmt}",
            f"--sink={tmp_path / 'aggregates'}",
            f"--dead_letter_sink=kafka://{bootstrap}/{names['dlq']}",
            f"--kafka_consumer_group=test-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--early_firing=2",
            "--runner=PrismRunner",
            "--streaming",
        ]
    )
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"check-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([names["dlq"]])
    expected = {
        (format_rfc3339_us(window_a), "click", "/home"): (3, 7.0, 2),
        (format_rfc3339_us(window_b), "click", "/home"): (1, 8.0, 1),
        (format_rfc3339_us(window_b), "purchase", "/home"): (1, 16.0, 1),
    }
    dead = []
    finals = {}
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                dead.append(message)
            finals = final_counts(read_rows(str(tmp_path / "aggregates"))[1])
            if finals == expected and len(dead) >= len(bad):
                break
    finally:
        result.cancel()
        consumer.close()

    assert finals == expected
    assert len(dead) == len(bad)
    by_payload = {}
    for message in dead:
        row = json.loads(message.value())
        payload = base64.b64decode(row["payload"])
        by_payload[payload] = row
        assert message.key() == row["error_code"].encode()
        assert row["source"] == source
        metadata = row["source_metadata"]
        assert (metadata["partition"], metadata["offset"]) == delivered[payload]
        assert metadata["topic"] == names["events"] and metadata["key"] == "test-key"
        assert isinstance(metadata["timestamp"], int) and metadata["timestamp"] > 0
    assert {payload: row["error_code"] for payload, row in by_payload.items()} == bad  # byte for byte
    stages = Counter(row["stage"] for row in by_payload.values())
    assert stages["window"] == 1 and stages["validate"] == 1 and sum(stages.values()) == len(bad)


# Each format and each write method once (both formats x both methods would add two minutes for no new path).
@pytest.mark.parametrize(("fmt", "method"), [("json", "STREAMING_INSERTS"), ("confluent-avro", "STORAGE_WRITE_API")])
def test_kafka_to_bigquery_exact_aggregates_and_dead_letters(topics, bigquery_emulator, fmt, method):
    """Kafka -> Prism -> BigQuery emulator: both tables hold exactly the expected final aggregates and dead letters."""
    from tests.integration.test_bigquery_sink import Dataset, endpoint_args

    bootstrap, names = topics
    dataset = Dataset(bigquery_emulator)
    window_a = (now_us() // MINUTE_US - 4) * MINUTE_US
    window_b = window_a + MINUTE_US
    valid, bad = mix(fmt, window_a)
    delivered = produce(bootstrap, names["events"], [*valid, valid[0], *bad])
    spec = resolve(
        [
            f"--source=kafka://{bootstrap}/{names['events']}",
            f"--format={fmt}",
            f"--sink={dataset.uri('aggregates')}",
            f"--dead_letter_sink={dataset.uri('dead_letter')}",
            *endpoint_args(bigquery_emulator, method),
            f"--kafka_consumer_group=test-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--runner=PrismRunner",
        ]
    )
    expected = {
        (format_rfc3339_us(window_a), "click", "/home"): (3, 7.0, 2),
        (format_rfc3339_us(window_b), "click", "/home"): (1, 8.0, 1),
        (format_rfc3339_us(window_b), "purchase", "/home"): (1, 16.0, 1),
    }
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    try:
        finals, dead = wait_for_bigquery(dataset, expected, len(bad), timeout_s=DEADLINE_S)
    finally:
        result.cancel()
        dataset.drop()
    assert finals == expected
    assert len(dead) == len(bad)
    assert {base64.b64decode(row["payload"]): row["error_code"] for row in dead} == bad  # the original bytes
    for row in dead:  # the JSON column holds the record's position, as an object
        payload = base64.b64decode(row["payload"])
        assert (row["source_metadata"]["partition"], row["source_metadata"]["offset"]) == delivered[payload]


def _committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offset per partition (the next offset it will read; -1001 = none)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def _run_until_committed(spec: LaunchSpec, out: str, expected: dict, commit: tuple, deadline_s: float):
    """Runs the pipeline until its aggregates files hold ``expected`` and the group committed ``commit``."""
    bootstrap, group, topic, ends = commit
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    finals, committed = {}, {}
    try:
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            finals = final_counts(read_rows(out)[1])
            committed = _committed(bootstrap, group, topic, len(ends))
            if finals == expected and committed == ends:
                break
            time.sleep(1)
    finally:
        result.cancel()
    return finals, committed


def test_offsets_are_committed_and_a_restart_with_the_same_group_continues_where_it_stopped(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topic, group, partitions = f"events-{uuid.uuid4().hex[:8]}", f"test-{uuid.uuid4().hex[:8]}", 2
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])[topic].result(timeout=30)
    window_a = (now_us() // MINUTE_US - 4) * MINUTE_US
    window_b = window_a + MINUTE_US

    def argv(run: str) -> list[str]:
        return [
            f"--source=kafka://{bootstrap}/{topic}",
            f"--sink={tmp_path / run / 'aggregates'}",
            f"--dead_letter_sink={tmp_path / run / 'dead_letter'}",
            f"--kafka_consumer_group={group}",
            # Only for a group without committed offsets: the second run must start from the commits instead.
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--early_firing=2",
            "--runner=PrismRunner",
            "--streaming",
        ]

    # Run 1: a fresh group reads from the earliest offset; 3 events on 2 partitions.
    first = [as_json(event_fields(f"a{i}", window_a + i * 1_000_000, f"u{i}", i)) for i in range(1, 4)]
    produce(bootstrap, topic, first, partitions)
    finals, committed = _run_until_committed(
        resolve(argv("run1")),
        str(tmp_path / "run1" / "aggregates"),
        {(format_rfc3339_us(window_a), "click", "/home"): (3, 6.0, 3)},
        (bootstrap, group, topic, {0: 2, 1: 1}),
        DEADLINE_S,
    )
    assert finals == {(format_rfc3339_us(window_a), "click", "/home"): (3, 6.0, 3)}
    assert committed == {0: 2, 1: 1}  # the end of what was read, per partition

    # Run 2, same group, after 2 more events: it continues from the committed offsets and never sees run 1's events.
    second = [as_json(event_fields(f"b{i}", window_b + i * 1_000_000, f"u{i}", 10 * i)) for i in range(1, 3)]
    produce(bootstrap, topic, second, partitions)
    finals, committed = _run_until_committed(
        resolve(argv("run2")),
        str(tmp_path / "run2" / "aggregates"),
        {(format_rfc3339_us(window_b), "click", "/home"): (2, 30.0, 2)},
        (bootstrap, group, topic, {0: 3, 1: 2}),
        DEADLINE_S,
    )
    assert finals == {(format_rfc3339_us(window_b), "click", "/home"): (2, 30.0, 2)}  # nothing of window_a re-read
    assert committed == {0: 3, 1: 2}
    assert read_rows(str(tmp_path / "run2" / "dead_letter"))[1] == []


def test_kafka_timestamp_is_the_event_time_when_asked(topics, tmp_path):
    """--timestamp_source=kafka_timestamp: windows follow the records' Kafka timestamps, not the payloads'
    event_time (two hours old: as payload time every record would be too late and dead-lettered)."""
    bootstrap, names = topics
    window_a = (now_us() // MINUTE_US - 4) * MINUTE_US
    window_b = window_a + MINUTE_US
    stale = window_a - 120 * MINUTE_US
    events = [as_json(event_fields(f"k{i}", stale + i * 1_000_000, f"u{i}", i)) for i in range(1, 4)]
    kafka_times = [window_a + 1_000_000, window_a + 2_000_000, window_b + 1_000_000]  # microseconds
    produce(bootstrap, names["events"], events, timestamps_ms=[t // 1000 for t in kafka_times])
    spec = resolve(
        [
            f"--source=kafka://{bootstrap}/{names['events']}",
            f"--sink={tmp_path / 'aggregates'}",
            f"--dead_letter_sink={tmp_path / 'dead_letter'}",
            "--timestamp_source=kafka_timestamp",
            f"--kafka_consumer_group=test-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--early_firing=2",
            "--runner=PrismRunner",
            "--streaming",
        ]
    )
    expected = {
        (format_rfc3339_us(window_a), "click", "/home"): (2, 3.0, 2),
        (format_rfc3339_us(window_b), "click", "/home"): (1, 3.0, 1),
    }
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    finals: dict = {}
    try:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline and finals != expected:
            finals = final_counts(read_rows(str(tmp_path / "aggregates"))[1])
            time.sleep(1)
    finally:
        result.cancel()
    assert finals == expected
    assert read_rows(str(tmp_path / "dead_letter"))[1] == []  # nothing too late
