"""Smoke tests: each local service answers a real, official client the way the pipeline needs."""

from __future__ import annotations

import base64
import time
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services import BigQueryEmulator, KafkaBroker, PubSubEmulator

pytestmark = pytest.mark.integration


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


# ---- Kafka ---------------------------------------------------------------------------------------


def test_kafka_produce_and_consume(kafka_broker: KafkaBroker) -> None:
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = _unique("smoke")
    admin = AdminClient({"bootstrap.servers": kafka_broker.bootstrap_servers})
    # Explicit creation: auto-creation on first produce answers LEADER_NOT_AVAILABLE for a while.
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(timeout=30)

    delivered = []
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap_servers, "acks": "all"})
    producer.produce(
        topic,
        key=b"user-1",
        value=b'{"event": "click"}',
        headers=[("source", b"smoke")],
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    assert producer.flush(30) == 0
    assert len(delivered) == 1
    assert delivered[0][0] is None, delivered[0][0]

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_broker.bootstrap_servers,
            "group.id": _unique("group"),
            "auto.offset.reset": "earliest",
        }
    )
    try:
        consumer.subscribe([topic])
        message = None
        deadline = time.monotonic() + 60
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(1.0)
            if polled is not None:
                assert polled.error() is None, polled.error()
                message = polled
        assert message is not None, "no message consumed within 60 s"
        assert message.key() == b"user-1"
        assert message.value() == b'{"event": "click"}'
        assert message.headers() == [("source", b"smoke")]
        assert message.topic() == topic
        consumer.commit(message=message, asynchronous=False)
    finally:
        consumer.close()


# ---- Pub/Sub -------------------------------------------------------------------------------------


def test_pubsub_publish_and_pull(pubsub_emulator: PubSubEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    # The env var is how Beam's ReadFromPubSub (and any default client) finds the emulator.
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    from google.cloud import pubsub_v1

    project = "smoke-project"
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic = publisher.topic_path(project, _unique("events"))
    subscription = subscriber.subscription_path(project, _unique("events-sub"))
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)

    before = datetime.now(timezone.utc)
    future = publisher.publish(topic, b'{"event": "view"}', origin="smoke", schema="v1")
    message_id = future.result(timeout=30)
    after = datetime.now(timezone.utc)
    assert message_id

    received = []
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=10)
        received.extend(response.received_messages)
    assert len(received) == 1
    message = received[0].message
    assert message.data == b'{"event": "view"}'
    assert dict(message.attributes) == {"origin": "smoke", "schema": "v1"}
    assert message.message_id == message_id
    # Beam uses publish_time as the element timestamp: it must be set by the server, and now.
    published = message.publish_time
    assert published.tzinfo is not None
    assert before - timedelta(seconds=5) <= published <= after + timedelta(seconds=5)

    subscriber.acknowledge(subscription=subscription, ack_ids=[received[0].ack_id])
    subscriber.delete_subscription(subscription=subscription)
    publisher.delete_topic(topic=topic)
    subscriber.close()
    publisher.transport.close()


# ---- BigQuery ------------------------------------------------------------------------------------


def test_bigquery_tables_streaming_insert_and_query(bigquery_emulator: BigQueryEmulator) -> None:
    from google.cloud import bigquery

    client = bigquery_emulator.client()
    dataset_id = f"{bigquery_emulator.project}.{_unique('smoke')}"
    client.create_dataset(dataset_id)
    assert dataset_id.split(".")[1] in {d.dataset_id for d in client.list_datasets()}

    # Every scalar type the pipeline writes.
    scalars = client.create_table(
        bigquery.Table(
            f"{dataset_id}.scalars",
            schema=[
                bigquery.SchemaField("ts", "TIMESTAMP", mode="REQUIRED"),
                bigquery.SchemaField("count", "INT64"),
                bigquery.SchemaField("ratio", "FLOAT64"),
                bigquery.SchemaField("name", "STRING"),
                bigquery.SchemaField("payload", "BYTES"),
                bigquery.SchemaField("valid", "BOOL"),
            ],
        )
    )
    assert [f.field_type for f in client.get_table(scalars).schema] == [
        "TIMESTAMP",
        "INTEGER",
        "FLOAT",
        "STRING",
        "BYTES",
        "BOOLEAN",
    ]

    # Day-partitioned on a column and clustered by two fields, like the aggregates table.
    partitioned = bigquery.Table(
        f"{dataset_id}.events",
        schema=[
            bigquery.SchemaField("event_time", "TIMESTAMP", mode="REQUIRED"),
            bigquery.SchemaField("country", "STRING"),
            bigquery.SchemaField("user_id", "STRING"),
            bigquery.SchemaField("value", "INT64"),
        ],
    )
    partitioned.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field="event_time"
    )
    partitioned.clustering_fields = ["country", "user_id"]
    client.create_table(partitioned)
    fetched = client.get_table(f"{dataset_id}.events")
    assert fetched.time_partitioning.type_ == "DAY"
    assert fetched.time_partitioning.field == "event_time"
    assert fetched.clustering_fields == ["country", "user_id"]

    rows = [
        {
            "ts": "2026-11-20T10:00:00Z",
            "count": 1,
            "ratio": 0.5,
            "name": "a",
            "payload": base64.b64encode(b"\x00\x01").decode(),
            "valid": True,
        },
        {
            "ts": "2026-11-20T11:00:00.123456Z",
            "count": 2,
            "ratio": 1.5,
            "name": "b",
            "payload": base64.b64encode(b"\xff").decode(),
            "valid": False,
        },
        # Same insertId as the first row: a retry that BigQuery de-duplicates.
        {
            "ts": "2026-11-20T10:00:00Z",
            "count": 1,
            "ratio": 0.5,
            "name": "a",
            "payload": base64.b64encode(b"\x00\x01").decode(),
            "valid": True,
        },
    ]
    assert client.insert_rows_json(scalars, rows, row_ids=["id-a", "id-b", "id-a"]) == []
    # A later retry of an already stored row is de-duplicated as well.
    assert client.insert_rows_json(scalars, rows[:1], row_ids=["id-a"]) == []

    # A row the schema refuses: BigQuery answers per row; by default the whole request is refused,
    # the bad row as "invalid" (naming the field) and the good one as "stopped".
    batch = [
        {"ts": "2026-11-20T12:00:00Z", "count": 3, "name": "c"},
        {"ts": "2026-11-20T12:00:00Z", "count": "not a number", "name": "bad"},
    ]
    response = client.insert_rows_json(scalars, batch, row_ids=["c", "bad"])
    refused = {entry["index"]: entry["errors"][0] for entry in response}
    assert refused[1]["reason"] == "invalid" and refused[1]["location"] == "count", refused
    assert refused[0]["reason"] == "stopped", refused
    # With skip_invalid_rows only the bad row is reported, and the good one is stored.
    skipped = client.insert_rows_json(scalars, batch, row_ids=["c", "bad"], skip_invalid_rows=True)
    assert [(e["index"], e["errors"][0]["reason"]) for e in skipped] == [(1, "invalid")]

    events = [
        {"event_time": "2026-11-20T23:59:59Z", "country": "DE", "user_id": "u1", "value": 3},
        {"event_time": "2026-11-21T00:00:01Z", "country": "FR", "user_id": "u2", "value": 4},
    ]
    assert client.insert_rows_json(f"{dataset_id}.events", events, row_ids=["e1", "e2"]) == []

    result = list(client.query(f"SELECT * FROM `{dataset_id}.scalars` ORDER BY ts").result())
    # "a" once (three inserts, one insertId), "b", and "c" only from the skip_invalid_rows request.
    assert [row["name"] for row in result] == ["a", "b", "c"]
    first, second = result[0], result[1]
    assert first["ts"] == datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    assert second["ts"] == datetime(2026, 11, 20, 11, 0, 0, 123456, tzinfo=timezone.utc)
    assert (first["count"], first["ratio"], first["payload"], first["valid"]) == (1, 0.5, b"\x00\x01", True)
    assert (second["count"], second["ratio"], second["payload"], second["valid"]) == (2, 1.5, b"\xff", False)

    job = client.query(
        f"SELECT country, SUM(value) AS total FROM `{dataset_id}.events` "
        "WHERE DATE(event_time) = @day GROUP BY country",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("day", "DATE", "2026-11-20")]
        ),
    )
    assert [(row["country"], row["total"]) for row in job.result()] == [("DE", 3)]

    client.delete_dataset(dataset_id, delete_contents=True)
    client.close()
