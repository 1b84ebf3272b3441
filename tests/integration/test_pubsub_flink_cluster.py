"""Pub/Sub (pstest) on the Flink session cluster, with checkpoints every second: the pull source acknowledges a message
once a completed checkpoint contains the bundle that read it.

The TaskManager starts the Python workers (PROCESS environment, pipelines/local_run/boot.py); each job names its Pub/Sub
endpoint in that environment (``PUBSUB_EMULATOR_HOST``: pstest, or the fault proxy in front of it), plus a marker
that identifies its own worker processes.

- the known mix gives the exact aggregates, and every dead letter reaches its Pub/Sub topic byte for byte;
- acknowledgements lost for a while: pstest redelivers after the ack deadline, the counts stay exact;
- a broken message is dead-lettered once, delivered once and acknowledged; the source's metrics, read from Flink's
  REST API, say the same;
- a job that processed every message but never checkpointed acknowledged none: cancelled and started again, the
  second job gets every message again and counts each once;
- the job's Python worker is killed (SIGKILL) mid-stream: Flink restores the last checkpoint, the messages read after
  it (never acknowledged) come back when their deadline expires, and every message is counted exactly once.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.local_run.boot import python_boot_command
from pipelines.summary import read_rows
from services import FlinkCluster
from tests.integration.event_mix import expected_finals, mix, recent_window
from tests.integration.fault_proxies import PubSubFaultProxy
from tests.integration.fault_report import FaultReport
from tests.integration.pubsub_jobs import (
    ACK_DEADLINE_S,
    SOURCE_COUNTERS,
    SOURCE_GAUGE,
    Job,
    create_names,
    left_in,
    pull_all,
    settled_value,
    start_job,
)
from tests.integration.results import final_counts, wait_for
from tests.integration.traffic import SteadyPublisher, Traffic
from transforms import metrics

pytestmark = pytest.mark.integration

EVERY_SECOND = ("--checkpointing_interval=1000",)
# Flink takes a job's first checkpoint after a random delay between the minimum pause and the interval: both an hour.
HOURLY = ("--checkpointing_interval=3600000", "--min_pause_between_checkpoints=3600000")

START_S = 240
SETTLE_S = 240
WINDOW_S = 20
RATE = 10


@pytest.fixture
def names(pubsub_emulator, monkeypatch):
    return create_names(pubsub_emulator, monkeypatch, prefix="cluster")


@dataclass
class Cluster:
    """The session cluster and the jobs it ran before the test: a test cancels its own jobs only, through Flink's REST
    API (Beam's cancel stops the job's invocation in the job server, not the job on the cluster)."""

    flink: FlinkCluster
    before: set[str]

    def cancel_ours(self) -> None:
        self.flink.cancel_running_jobs(keep=self.before)

    def restarts(self) -> list[int]:
        return [self.flink.restarts(j["id"]) for j in self.flink.jobs() if j["id"] not in self.before]

    def source_metrics(self) -> dict[str, int]:
        """The pull source's counters and gauge in our running job, summed over subtasks, as Flink's REST API reports
        them: Beam's metrics of a stage are metrics of its Flink operator, ``<subtask>.<operator>.<namespace>_<name>``
        (seen: ``0.[10]{ReadRecords__StreamingAnalytics__WriteDeadLetters}.realtime_analytics_pubsub_messages_pulled``).
        """
        wanted = {f".{metrics.NAMESPACE}_{name}": name for name in (*SOURCE_COUNTERS, SOURCE_GAUGE)}
        values = dict.fromkeys(wanted.values(), 0)
        for job in self.flink.jobs():
            if job["id"] in self.before or job.get("status") != "RUNNING":
                continue
            for vertex in self.flink.job(job["id"])["vertices"]:
                path = f"/jobs/{job['id']}/vertices/{vertex['id']}/metrics"
                ids = [m["id"] for m in _rest(self.flink, path) if any(m["id"].endswith(w) for w in wanted)]
                for found in _rest(self.flink, f"{path}?get={','.join(ids)}") if ids else []:
                    name = next(n for w, n in wanted.items() if found["id"].endswith(w))
                    values[name] += int(float(found["value"]))
        return values


def _rest(flink: FlinkCluster, path: str):
    with urllib.request.urlopen(f"{flink.rest_url}{path}", timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture
def cluster(flink_cluster):
    # What the test leaves running is cancelled after it by conftest's autouse fixture.
    return Cluster(flink_cluster, {job["id"] for job in flink_cluster.jobs()})


def runner(
    cluster: Cluster, pubsub_host: str, mark: str, checkpoints: tuple[str, ...] = EVERY_SECOND
) -> tuple[str, ...]:
    """The runner flags: the session cluster, ``checkpoints``, restarts, and Python workers that talk to
    ``pubsub_host`` and carry ``mark`` in their environment."""
    environment = {
        "command": str(python_boot_command()),
        "env": {"PUBSUB_EMULATOR_HOST": pubsub_host, "JOB_MARK": mark},
    }
    return (
        "--runner=FlinkRunner",
        f"--flink_master={cluster.flink.flink_master}",
        *checkpoints,
        "--number_of_execution_retries=5",
        "--execution_retry_delay=1000",
        "--environment_type=PROCESS",
        f"--environment_config={json.dumps(environment)}",
    )


def stop(job: Job, cluster: Cluster) -> None:
    cluster.cancel_ours()
    job.stop()


def workers_of(mark: str) -> list[int]:
    """Pids of the Python worker processes that carry ``mark`` in their environment (this job's, nobody else's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if f"JOB_MARK={mark}".encode() in environ and b"sdk_worker_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def test_known_mix_on_the_cluster_gives_exact_aggregates_and_every_dead_letter(cluster, names, tmp_path):
    publisher, subscriber, topics = names
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    mark = uuid.uuid4().hex
    job = start_job(
        runner(cluster, os.environ["PUBSUB_EMULATOR_HOST"], mark),
        topics["events_sub"],
        str(tmp_path / "aggregates"),
        f"pubsub://{topics['dlq']}",
        "--allowed_lateness=600",
    )
    try:
        for payload in [*valid, valid[0], *bad]:
            publisher.publish(topics["events"], payload, origin="test").result(timeout=30)
        deadline = time.monotonic() + START_S + SETTLE_S
        dead = pull_all(subscriber, topics["dlq_sub"], len(bad), deadline)
        expected = expected_finals(window_a)
        wait_for(
            lambda: final_counts(read_rows(str(tmp_path / "aggregates"))[1]) == expected,
            max(deadline - time.monotonic(), 1),
            "the exact final aggregates",
        )
        assert workers_of(mark)  # the cluster's TaskManager ran the Python worker, not this process
    finally:
        stop(job, cluster)
    by_payload = {base64.b64decode(json.loads(m.data)["payload"]): json.loads(m.data) for m in dead}
    assert len(dead) == len(bad)
    assert {payload: row["error_code"] for payload, row in by_payload.items()} == bad
    assert all(row["source_metadata"]["attributes"] == {"origin": "test"} for row in by_payload.values())
    assert Counter(row["stage"] for row in by_payload.values()) == {"parse": 2, "validate": 1, "window": 1}


def test_lost_acknowledgements_on_the_cluster_are_redelivered_and_deduplicated(
    pubsub_emulator, cluster, names, tmp_path
):
    publisher, _subscriber, topics = names
    traffic = Traffic(f"clr{topics['events'][-8:]}", WINDOW_S, bad_every=10**9)
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    aggregates = str(tmp_path / "aggregates")
    windows = (f"--window_size={WINDOW_S}", "--early_firing=2", "--allowed_lateness=600")
    job = start_job(
        runner(cluster, proxy.host, uuid.uuid4().hex),
        topics["events_sub"],
        aggregates,
        str(tmp_path / "dlq"),
        *windows,
    )
    load = SteadyPublisher(publisher, topics["events"], RATE, traffic.next)
    try:
        wait_for(lambda: proxy.pulls > 0, START_S, "the job to pull")
        load.start()
        time.sleep(4)
        proxy.drop_acks(True)
        time.sleep(8)
        proxy.drop_acks(False)
        time.sleep(6)
        load.stop()
        expected = traffic.expected()
        last = {"delivered": 0, "at": time.monotonic()}

        def settled() -> bool:
            if proxy.delivered != last["delivered"]:
                last.update(delivered=proxy.delivered, at=time.monotonic())
            quiet = time.monotonic() - last["at"] > ACK_DEADLINE_S + 5
            return quiet and final_counts(read_rows(aggregates)[1]) == expected

        wait_for(settled, SETTLE_S, "every message, redeliveries included, to be processed")
    finally:
        stop(job, cluster)
        proxy.stop()
    assert proxy.acks_dropped > 0 and proxy.redelivered > 0
    assert final_counts(read_rows(aggregates)[1]) == expected
    assert proxy.delivered == traffic.count + proxy.redelivered


def test_a_broken_message_on_the_cluster_is_dead_lettered_once_and_acknowledged(
    pubsub_emulator, cluster, names, tmp_path
):
    publisher, subscriber, topics = names
    window_a = recent_window()
    valid, _bad = mix("json", window_a)
    broken = b'{"event_id": "broken-1", "event_type": '
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    aggregates, dead_letters = str(tmp_path / "aggregates"), str(tmp_path / "dead_letter")
    job = start_job(
        runner(cluster, proxy.host, uuid.uuid4().hex),
        topics["events_sub"],
        aggregates,
        dead_letters,
        "--allowed_lateness=600",
    )
    try:
        ids = [publisher.publish(topics["events"], p).result(timeout=30) for p in [*valid[:3], broken, *valid[3:]]]
        wait_for(lambda: read_rows(dead_letters)[1], START_S + SETTLE_S, "the broken message's dead letter")
        wait_for(lambda: set(proxy.acked) >= set(ids), SETTLE_S, "every message to be acknowledged")
        time.sleep(ACK_DEADLINE_S + 5)
        dead = read_rows(dead_letters)[1]
        source = {
            metrics.PUBSUB_MESSAGES_PULLED: len(ids),
            metrics.PUBSUB_MESSAGES_ACKNOWLEDGED: len(ids),
            metrics.PUBSUB_MESSAGES_RELEASED: 0,
            metrics.PUBSUB_MESSAGES_OUTSTANDING: 0,
        }
        assert settled_value(cluster.source_metrics, source, 60) == source  # Flink reports every few seconds
    finally:
        stop(job, cluster)
        proxy.stop()
    assert [base64.b64decode(row["payload"]) for row in dead] == [broken]
    assert proxy.deliveries[ids[3]] == 1 and proxy.acked[ids[3]] >= 1
    assert all(proxy.deliveries[i] == 1 for i in ids)
    assert left_in(subscriber, topics["events_sub"]) == []


def test_a_killed_worker_on_the_cluster_loses_nothing_and_counts_every_message_once(
    pubsub_emulator, cluster, names, tmp_path
):
    publisher, _subscriber, topics = names
    traffic = Traffic(f"clk{topics['events'][-8:]}", WINDOW_S, duplicate_every=8, bad_every=10**9)
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    mark = uuid.uuid4().hex
    aggregates = str(tmp_path / "aggregates")
    windows = (f"--window_size={WINDOW_S}", "--early_firing=1", "--allowed_lateness=600")
    job = start_job(
        runner(cluster, proxy.host, mark), topics["events_sub"], aggregates, str(tmp_path / "dlq"), *windows
    )
    load = SteadyPublisher(publisher, topics["events"], RATE, traffic.next)
    try:
        wait_for(lambda: proxy.pulls > 0 and workers_of(mark), START_S, "the job's worker to pull")
        load.start()
        wait_for(lambda: len(proxy.acked) >= 3 * RATE, SETTLE_S, "checkpoints to acknowledge messages")
        killed = workers_of(mark)
        for pid in killed:
            os.kill(pid, signal.SIGKILL)  # this job's own worker processes, found by their marker
        killed_at = time.monotonic()
        # Flink notices at the next checkpoint ("SDK Harness connection lost") and restarts the job from the last one.
        wait_for(lambda: any(cluster.restarts()), 120, "Flink to restart the job")
        load.stop()
        expected = traffic.expected()
        wait_for(lambda: final_counts(read_rows(aggregates)[1]) == expected, SETTLE_S, "exact counts")
        recovered_s = time.monotonic() - killed_at
        published = set(proxy.deliveries)
        wait_for(lambda: set(proxy.acked) >= published, SETTLE_S, "every message to be acknowledged")
        restarts = cluster.restarts()
    finally:
        stop(job, cluster)
        proxy.stop()
    FaultReport(
        test="Pub/Sub on the Flink session cluster: the Python worker killed",
        load=f"{RATE} records/s for {load.seconds:.0f} s ({traffic.count} records)",
        fault=f"SIGKILL to {len(killed)} worker process(es); job restarts {restarts}",
        records_in=proxy.delivered,
        records_out=sum(count for count, _, _ in final_counts(read_rows(aggregates)[1]).values()),
        dead_lettered=0,
        duplicates=traffic.duplicates + proxy.redelivered,
        detail=f"exact counts {recovered_s:.0f} s after the kill; {proxy.redelivered} redeliveries",
    ).emit()
    assert killed and any(restarts)
    assert final_counts(read_rows(aggregates)[1]) == expected


def test_a_job_cancelled_on_the_cluster_before_a_checkpoint_acknowledges_nothing_and_a_restart_counts_exactly(
    pubsub_emulator, cluster, names, tmp_path
):
    publisher, _subscriber, topics = names
    traffic = Traffic(f"clc{topics['events'][-8:]}", WINDOW_S, duplicate_every=8, bad_every=10**9)
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    first, second = tmp_path / "first", tmp_path / "second"
    windows = (f"--window_size={WINDOW_S}", "--early_firing=1", "--allowed_lateness=600")
    try:
        hourly = runner(cluster, proxy.host, uuid.uuid4().hex, HOURLY)
        job = start_job(hourly, topics["events_sub"], str(first / "agg"), str(first / "dlq"), *windows)
        try:
            wait_for(lambda: proxy.pulls > 0, START_S, "job 1 to pull")
            ids = [publisher.publish(topics["events"], traffic.next()).result(timeout=30) for _ in range(60)]
            expected = traffic.expected()
            # Processed: the early panes (every second) hold every event...
            wait_for(lambda: final_counts(read_rows(str(first / "agg"))[1]) == expected, SETTLE_S, "job 1's counts")
            time.sleep(3)
            assert not proxy.acked  # ...but no checkpoint completed, so nothing is acknowledged
        finally:
            stop(job, cluster)  # cancelled on the cluster: its Python worker goes with it, and its leases
        cancelled_at = time.monotonic()
        job = start_job(
            runner(cluster, proxy.host, uuid.uuid4().hex),
            topics["events_sub"],
            str(second / "agg"),
            str(second / "dlq"),
            *windows,
        )
        try:
            wait_for(lambda: final_counts(read_rows(str(second / "agg"))[1]) == expected, SETTLE_S, "job 2's counts")
            recovered_s = time.monotonic() - cancelled_at
            wait_for(lambda: set(proxy.acked) >= set(ids), SETTLE_S, "every message to be acknowledged")
        finally:
            stop(job, cluster)
    finally:
        proxy.stop()
    FaultReport(
        test="Pub/Sub on the Flink session cluster: job cancelled before its first checkpoint, then restarted",
        load=f"{len(ids)} records ({traffic.duplicates} duplicate publishes)",
        fault="job 1 processed every record (early panes complete) with no checkpoint, then was cancelled",
        records_in=len(ids),
        records_out=sum(count for count, _, _ in final_counts(read_rows(str(second / "agg"))[1]).values()),
        dead_lettered=0,
        duplicates=traffic.duplicates,
        detail=f"job 2 had the exact counts {recovered_s:.0f} s after job 1 was cancelled",
    ).emit()
    assert final_counts(read_rows(str(second / "agg"))[1]) == expected
    assert all(proxy.deliveries[i] == 2 for i in ids)  # to job 1 (never acknowledged), then to job 2
