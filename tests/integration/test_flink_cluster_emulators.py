"""A job on the Flink session cluster reaches the emulators the launching shell names (issue 12, point 5).

The cluster was started without any emulator address in its environment (as by `services up` before the emulators,
or as a shared cluster is). The launching process has ``PUBSUB_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST`` set and
passes no endpoint option: aggregates go to the BigQuery emulator, dead letters to a pstest topic. The Python workers
the TaskManager starts get the addresses through the job's PROCESS environment (pipelines/runners.py), so both
sinks work from the cluster; without them the Pub/Sub publisher fails with DefaultCredentialsError.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import psutil
from apache_beam.options.pipeline_options import PortableOptions

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.runners import cancel_on_flink_cluster
from pipelines.spec import resolve
from services.kafka import create_topics
from tests.integration.event_mix import expected_finals, mix, produce, recent_window
from tests.integration.results import wait_for_bigquery

DEADLINE_S = 180
PROJECT = "local-project"


def _emulators_in_task_managers(cluster) -> set[str]:
    """The emulator variables in the environment of the cluster's TaskManager processes (what workers inherit)."""
    found: set[str] = set()
    task_managers = [
        proc
        for proc in psutil.Process(cluster.pid).children(recursive=True)
        if "TaskManagerRunner" in " ".join(proc.cmdline())
    ]
    assert task_managers, "no TaskManager process found under the cluster"
    for proc in task_managers:
        found |= {name for name in proc.environ() if "_EMULATOR_" in name}
    return found


def test_cluster_workers_use_the_emulators_of_the_launching_environment(
    kafka_broker, flink_cluster, pubsub_emulator, bigquery_emulator, dataset, monkeypatch
):
    for name, value in {**pubsub_emulator.env_vars(), **bigquery_emulator.env_vars()}.items():
        monkeypatch.setenv(name, value)
    publisher, subscriber = pubsub_emulator.publisher(), pubsub_emulator.subscriber()
    suffix = uuid.uuid4().hex[:8]
    dlq, dlq_sub = f"projects/{PROJECT}/topics/dlq-{suffix}", f"projects/{PROJECT}/subscriptions/dlq-{suffix}"
    publisher.create_topic(name=dlq)
    subscriber.create_subscription(name=dlq_sub, topic=dlq)

    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topics(bootstrap, "events")["events"]
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    produce(bootstrap, topic, [*valid, *bad])
    spec = resolve(
        [
            f"--source=kafka://{bootstrap}/{topic}",
            f"--sink={dataset.uri('aggregates')}",  # no --bigquery_endpoint: BIGQUERY_EMULATOR_HOST names it
            f"--dead_letter_sink=pubsub://{dlq}",
            f"--kafka_consumer_group=test-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            "--allowed_lateness=600",
            "--runner=FlinkRunner",
            f"--flink_master={flink_cluster.flink_master}",
            "--streaming",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    worker_env = json.loads(pipeline.options.view_as(PortableOptions).environment_config)["env"]
    result = pipeline.run()
    received: dict[bytes, str] = {}
    try:
        finals, _ = wait_for_bigquery(dataset, expected_finals(window_a), 0, timeout_s=DEADLINE_S)
        deadline = time.monotonic() + 60
        while len(received) < len(bad) and time.monotonic() < deadline:
            response = subscriber.pull(subscription=dlq_sub, max_messages=100, timeout=5)
            for message in response.received_messages:
                row = json.loads(message.message.data)
                received[row["payload"].encode()] = message.message.attributes["error_code"]
            if response.received_messages:
                subscriber.acknowledge(subscription=dlq_sub, ack_ids=[m.ack_id for m in response.received_messages])
        running = [job for job in flink_cluster.jobs() if job["status"] == "RUNNING"]
    finally:
        result.cancel()
        cancel_on_flink_cluster(spec.runner)  # Beam's cancel leaves the cluster's job running
    assert worker_env["PUBSUB_EMULATOR_HOST"] == pubsub_emulator.host
    assert not _emulators_in_task_managers(flink_cluster)  # the cluster itself knows no emulator
    assert running  # on the cluster, not an embedded Flink
    assert finals == expected_finals(window_a)
    assert {base64.b64decode(payload): code for payload, code in received.items()} == bad
