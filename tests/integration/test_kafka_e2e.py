"""Kafka (a real Apache Kafka 4.x broker) -> streaming pipeline on Prism -> aggregates + Kafka dead letters.

A known mix is produced to a fresh topic: valid events in two windows, a redelivered duplicate, malformed and invalid
records, and one event far later than the allowed lateness; once as JSON, once in the Confluent Avro wire format.
The pipeline reads it from the earliest offset through Beam's cross-language KafkaIO (Java worker started by
pipelines/jars.py, Prism built by pipelines/runners.py), and the test checks the exact final aggregates and reads
every dead letter back from its topic: payload bytes, partition/offset metadata, key = error code.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections import Counter

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from confluent_kafka import Consumer

from pipelines.graph import build_pipeline
from pipelines.runners import local_runner
from pipelines.summary import read_rows
from services.kafka import create_topics
from tests.integration.event_mix import expected_finals, mix, produce, recent_window
from tests.integration.results import final_counts, wait_for_bigquery

DEADLINE_S = 110


@pytest.fixture
def topics(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    return bootstrap, create_topics(bootstrap, "events", "dlq")


@pytest.mark.parametrize("fmt", ["json", "confluent-avro"])
def test_kafka_stream_gives_exact_aggregates_and_every_dead_letter(topics, tmp_path, fmt):
    bootstrap, names = topics
    window_a = recent_window()
    valid, bad = mix(fmt, window_a)
    # valid[0] again: a redelivery, dropped as a duplicate.
    delivered = produce(bootstrap, names["events"], [*valid, valid[0], *bad])
    source = f"kafka://{bootstrap}/{names['events']}"
    options = PipelineOptions(
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
    expected = expected_finals(window_a)
    dead = []
    finals = {}
    pipeline = beam.Pipeline(runner=local_runner(options, streaming=True), options=options)
    build_pipeline(pipeline, options)
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


def test_kafka_to_bigquery_exact_aggregates_and_dead_letters(topics, bigquery_emulator):
    """Kafka -> Prism -> BigQuery emulator: both tables hold exactly the expected final aggregates and dead letters."""
    from tests.integration.test_bigquery_sink import Dataset

    bootstrap, names = topics
    dataset = Dataset(bigquery_emulator)
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    produce(bootstrap, names["events"], [*valid, valid[0], *bad])
    options = PipelineOptions(
        [
            f"--source=kafka://{bootstrap}/{names['events']}",
            f"--sink={dataset.uri('aggregates')}",
            f"--dead_letter_sink={dataset.uri('dead_letter')}",
            f"--bigquery_endpoint={bigquery_emulator.endpoint}",
            f"--kafka_consumer_group=test-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--runner=PrismRunner",
        ]
    )
    expected = expected_finals(window_a)
    pipeline = beam.Pipeline(runner=local_runner(options, streaming=True), options=options)
    build_pipeline(pipeline, options)
    result = pipeline.run()
    try:
        finals, dead = wait_for_bigquery(dataset, expected, len(bad), timeout_s=DEADLINE_S)
    finally:
        result.cancel()
        dataset.drop()
    assert finals == expected
    assert {base64.b64decode(row["payload"]): row["error_code"] for row in dead} == bad
