"""Ctrl-C on a streaming job on a Flink session cluster, as a user presses it in the CLI: the job is cancelled on the
cluster (not left running there), the summary so far is printed, exit code 130, no gRPC traceback.

(Ctrl-C on the direct runner: tests/unit/test_ctrl_c.py; on Prism: tests/integration/test_kafka_direct_runner.py.)
"""

from __future__ import annotations

import time
import uuid

import pytest

from pipelines.summary import read_rows
from services.kafka import create_topics
from tests.integration.event_mix import mix, produce, recent_window
from tests.unit.test_ctrl_c import interrupt_cli

pytestmark = pytest.mark.integration


def test_ctrl_c_cancels_the_job_on_a_flink_cluster(kafka_broker, flink_cluster, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topics(bootstrap, "events")["events"]
    valid, bad = mix("json", recent_window())
    produce(bootstrap, topic, [*valid, *bad])
    before = {job["id"] for job in flink_cluster.jobs()}
    argv = [
        f"--source=kafka://{bootstrap}/{topic}",
        f"--sink={tmp_path / 'agg'}",
        f"--dead_letter_sink={tmp_path / 'dlq'}",
        f"--kafka_consumer_group=ctrl-c-{uuid.uuid4().hex[:8]}",
        "--kafka_start_offset=earliest",
        "--early_firing=2",
        "--runner=FlinkRunner",
        f"--flink_master={flink_cluster.flink_master}",
        "--streaming",
    ]

    def ours() -> list[dict]:
        return [job for job in flink_cluster.jobs() if job["id"] not in before]

    def running_with_results() -> bool:
        time.sleep(0.5)
        return any(job["status"] == "RUNNING" for job in ours()) and bool(read_rows(str(tmp_path / "agg"))[1])

    code, out, err = interrupt_cli(argv, running_with_results, tmp_path, timeout_s=240)

    assert code == 130, err[-3000:]
    assert "Traceback" not in err and "CANCELLED" not in err, err[-3000:]
    lines = out.splitlines()
    assert lines[0].startswith("realtime-analytics: stopped (Ctrl-C) after ") and "(FlinkRunner, streaming)" in lines[0]
    # Beam's Flink job server reports counters only once a job has ended: the summary says so, never zeros.
    read = next(line for line in lines if "records read" in line)
    assert read.split()[2] != "0", read
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(job["status"] != "CANCELED" for job in ours()):
        time.sleep(1)
    assert [job["status"] for job in ours()] == ["CANCELED"]  # cancelled on the cluster, not left running there
