"""Kafka (a real broker) -> the main job on a real Flink session cluster (streaming) -> the BigQuery emulator.

The cluster is Flink 1.16 from PyPI (services/flink.py): a JobManager and a TaskManager process. The pipeline is
submitted through Beam's Flink job server (pipelines/local_run/jars.py) with no Flink-specific flag besides
``--flink_master``;
the TaskManager reads Kafka itself (runner-native KafkaIO) and starts the Python and Java SDK workers as processes
(pipelines/local_run/boot.py). Both tables must hold exactly the expected final aggregates and dead letters, and the
checkpointing and state backend options must have reached Flink (its REST API reports them, and checkpoints complete).
"""

from __future__ import annotations

import base64
import uuid

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from services.kafka import create_topics
from tests.integration.event_mix import expected_finals, mix, produce, recent_window
from tests.integration.results import wait_for_bigquery

DEADLINE_S = 150


def test_kafka_to_bigquery_on_a_flink_session_cluster(
    kafka_broker, flink_cluster, bigquery_emulator, dataset, tmp_path
):
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topics(bootstrap, "events")["events"]
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    produce(bootstrap, topic, [*valid, valid[0], *bad])  # valid[0] twice: a redelivery, dropped as a duplicate
    spec = resolve(
        [
            f"--source=kafka://{bootstrap}/{topic}",
            f"--sink={dataset.uri('aggregates')}",
            f"--dead_letter_sink={dataset.uri('dead_letter')}",
            f"--bigquery_endpoint={bigquery_emulator.endpoint}",
            f"--kafka_consumer_group=test-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--runner=FlinkRunner",
            f"--flink_master={flink_cluster.flink_master}",
            "--streaming",
            "--checkpointing_interval=1000",
            "--checkpointing_mode=AT_LEAST_ONCE",
            "--state_backend=rocksdb",
            f"--state_backend_storage_path=file://{tmp_path / 'checkpoints'}",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    try:
        finals, dead = wait_for_bigquery(dataset, expected_finals(window_a), len(bad), timeout_s=DEADLINE_S)
        running = [job for job in flink_cluster.jobs() if job["status"] == "RUNNING"]
        checkpoint_config = flink_cluster.checkpoint_config(running[0]["id"]) if running else {}
        completed = flink_cluster.completed_checkpoints(running[0]["id"]) if running else 0
    finally:
        result.cancel()
    assert len(running) == 1  # the job ran on the cluster, not on an embedded Flink
    assert (checkpoint_config["interval"], checkpoint_config["mode"]) == (1000, "at_least_once")
    assert checkpoint_config["state_backend"] == "RocksDBStateBackend"  # what Beam 2.56 sets for rocksdb
    assert completed >= 1 and any((tmp_path / "checkpoints").iterdir())
    assert finals == expected_finals(window_a)
    assert {base64.b64decode(row["payload"]): row["error_code"] for row in dead} == bad
    assert len(dead) == len(bad)
