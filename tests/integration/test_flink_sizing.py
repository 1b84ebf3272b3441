"""The session cluster as sized (services/flink.py, docs/runners-flink.md) under the loads issue 11 names.

1. A Kafka backlog that holds records of exactly ``--max_payload_bytes`` (1 MiB, valid, aggregated) and a few one
   byte larger (dead-lettered with all their bytes) among ordinary ones is caught up by a streaming job on the
   session cluster without a failure or restart; the results are exactly the batch run's of the same records.
2. Two TaskManagers, ``--parallelism=2``, a topic with two partitions: the final aggregates and dead letters are
   identical to ``--parallelism=1`` on the same cluster and records, and to the batch run.

The batch run of the same records (a file on the direct runner) is the reference: batch = streaming is what
tests/streaming proves, so a difference is the cluster's. The records' event times are within the last minute and the
allowed lateness is 600 s, so nothing is late for the streaming job either.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections import Counter

import orjson
import pytest

from benchmarks.flink_kafka import MAX_PAYLOAD_BYTES, create_topic, pad_to
from pipelines.summary import read_rows
from services import FlinkCluster
from tests.integration.event_mix import produce
from tests.integration.results import final_counts
from transforms.io.synthetic import generate_block, parse_synthetic_uri
from transforms.timefmt import now_us

WINDOWS = ["--window_size=10", "--allowed_lateness=600", "--early_firing=1"]
MIX = "keys=20&users=300&event_types=4&bad=0.03&duplicates=0.03&late=0.02&seed=31"


def _records(count: int, rate: int) -> list[bytes]:
    spec = parse_synthetic_uri(f"synthetic://?rate={rate}&{MIX}")
    return [payload for _, _, payload in generate_block(spec, 0, count, anchor_us=now_us() - 60_000_000)]


def _reference(tmp_path, payloads: list[bytes], file_run) -> tuple[dict, Counter]:
    source = tmp_path / "records.jsonl"
    # One record per line: the records hold no newline (JSON from orjson, padding of 'x').
    source.write_bytes(b"\n".join(payloads) + b"\n")
    batch = file_run(f"--source={source}", *WINDOWS)
    return final_counts(batch.aggregate_rows), _dead_letters(batch.dead_letter_rows)


def _dead_letters(rows: list[dict]) -> Counter:
    return Counter((row["error_code"], base64.b64decode(row["payload"])) for row in rows)


def _is_json_event(payload: bytes) -> bool:
    """A JSON object with an event_id: padding keeps it what it was (the mix also holds broken JSON, e.g. NaN)."""
    try:
        return isinstance(event := orjson.loads(payload), dict) and "event_id" in event
    except orjson.JSONDecodeError:
        return False


def _run_until(cluster, bootstrap: str, topic: str, out, expected: tuple[dict, Counter], *extra: str) -> dict:
    """Runs the streaming job on ``cluster`` until its results equal ``expected`` (or 600 s pass); returns what the
    job's results and Flink said."""
    from pipelines.graph import build_pipeline, new_pipeline
    from pipelines.runners import cancel_on_flink_cluster
    from pipelines.spec import resolve

    spec = resolve(
        [
            f"--source=kafka://{bootstrap}/{topic}",
            f"--sink={out / 'agg'}",
            f"--dead_letter_sink={out / 'dlq'}",
            f"--kafka_consumer_group=sizing-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            *WINDOWS,
            "--runner=FlinkRunner",
            f"--flink_master={cluster.flink_master}",
            "--streaming",
            *extra,
        ]
    )
    before = {job["id"] for job in cluster.jobs()}
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    started = time.monotonic()
    try:
        while True:
            finals = final_counts(read_rows(str(out / "agg"))[1])
            dead = _dead_letters(read_rows(str(out / "dlq"))[1])
            if (finals, dead) == expected or time.monotonic() - started > 600:
                break
            time.sleep(2)
        jobs = [job for job in cluster.jobs() if job["id"] not in before]
        job_id = jobs[0]["id"] if jobs else None
        state = cluster.job(job_id)["state"] if job_id else None
        restarts = cluster.restarts(job_id) if job_id else None
    finally:
        result.cancel()
        cancel_on_flink_cluster(spec.runner)  # Beam's cancel leaves the cluster's job running
    return {"finals": finals, "dead": dead, "state": state, "restarts": restarts, "seconds": time.monotonic() - started}


def test_backlog_with_max_size_records_on_the_session_cluster(kafka_broker, flink_cluster, file_run, tmp_path):
    ordinary = _records(30_000, rate=500)
    # Every 1000th record padded to exactly the limit (valid: aggregated); three one byte over (dead-lettered).
    payloads = [
        pad_to(p, MAX_PAYLOAD_BYTES) if i % 1000 == 500 and _is_json_event(p) else p for i, p in enumerate(ordinary)
    ]
    too_large = [pad_to(ordinary[i], MAX_PAYLOAD_BYTES + 1) for i in (7, 15_007, 29_007) if _is_json_event(ordinary[i])]
    payloads += too_large
    assert sum(len(p) == MAX_PAYLOAD_BYTES for p in payloads) >= 25 and too_large
    expected = _reference(tmp_path, payloads, file_run)
    assert Counter(code for code, _ in expected[1])["payload_too_large"] == len(too_large)

    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topic(bootstrap)  # takes records of 1 MiB
    produce(bootstrap, topic, payloads, max_message_bytes=2 * MAX_PAYLOAD_BYTES)
    run = _run_until(flink_cluster, bootstrap, topic, tmp_path / "flink", expected)

    assert run["state"] == "RUNNING" and run["restarts"] == 0, run["state"]
    assert run["finals"] == expected[0]
    assert run["dead"] == expected[1]


@pytest.fixture(scope="module")
def two_task_managers():
    """A session cluster of two TaskManagers with one slot each: parallelism 2 puts one subtask on each."""
    with FlinkCluster(taskmanagers=2, slots=1) as cluster:
        assert cluster.overview()["taskmanagers"] == 2
        yield cluster


def test_parallelism_2_on_two_task_managers_gives_the_results_of_parallelism_1(
    kafka_broker, two_task_managers, file_run, tmp_path
):
    payloads = _records(6_000, rate=200)
    expected = _reference(tmp_path, payloads, file_run)
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topic(bootstrap, partitions=2)
    produce(bootstrap, topic, payloads, partitions=2)

    one = _run_until(two_task_managers, bootstrap, topic, tmp_path / "p1", expected, "--parallelism=1")
    two = _run_until(two_task_managers, bootstrap, topic, tmp_path / "p2", expected, "--parallelism=2")

    assert (one["state"], two["state"]) == ("RUNNING", "RUNNING") and one["restarts"] == two["restarts"] == 0
    assert two["finals"] == one["finals"] == expected[0]
    assert two["dead"] == one["dead"] == expected[1]
