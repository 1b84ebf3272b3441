"""Nothing is acknowledged that the runner has not committed: the job dies with messages processed but not committed,
and after a restart every message is counted exactly once (nothing lost, duplicates deduplicated).

- Prism commits a bundle when it ends: the job's first bundle throws (one message makes the ``ToRecord`` step raise,
  injected in this process, where the LOOPBACK worker runs), Prism fails the job; no message was acknowledged, and
  a second job gets them all again and counts them exactly.
- Flink commits with a checkpoint: the job processes every message (its early panes hold the complete counts) but
  checkpoints only once an hour, so it acknowledges none; it is cancelled, and a second job with checkpoints every
  second gets them all again (once the first job's reader, idle, lets them go) and counts them exactly.
- Flink restarted from a checkpoint: checkpoints every second, and one message makes a bundle throw once, mid-stream;
  Flink restores the last checkpoint (windows and dedup state included) and the messages read after it, never
  acknowledged, come back; the final counts are exact.

Every message is counted through ``PubSubFaultProxy``: how often it was delivered and acknowledged.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from pipelines.summary import read_rows
from tests.integration.fault_proxies import PubSubFaultProxy
from tests.integration.fault_report import FaultReport
from tests.integration.pubsub_jobs import RUNNERS, create_names, start_job
from tests.integration.results import final_counts, wait_for
from tests.integration.traffic import Traffic
from transforms.io import pubsub

pytestmark = pytest.mark.integration

WINDOW_S = 30
WINDOWS = (f"--window_size={WINDOW_S}", "--early_firing=1", "--allowed_lateness=600")
START_S = 240
SETTLE_S = 240


@pytest.fixture
def names(pubsub_emulator, monkeypatch):
    return create_names(pubsub_emulator, monkeypatch)


def _crash_on(payload: bytes, flag: Path | None = None):
    """``message_metadata`` that throws for the message carrying ``payload``: always, or, with ``flag`` (a file that
    the first crash creates), once. The runner unpickles its own copies of the step, so "once" lives on disk."""
    original = pubsub.message_metadata

    def message_metadata(message):
        if message.data == payload and (flag is None or not flag.exists()):
            if flag is not None:
                flag.touch()
            raise RuntimeError("injected crash")
        return original(message)

    return message_metadata


def _publish(publisher, topic: str, traffic: Traffic, count: int) -> list[str]:
    return [publisher.publish(topic, traffic.next()).result(timeout=30) for _ in range(count)]


def test_prism_a_failed_bundle_acknowledges_nothing_and_a_restart_counts_every_message_once(
    pubsub_emulator, names, tmp_path, monkeypatch
):
    publisher, _subscriber, topics = names
    traffic = Traffic(f"prc{topics['events'][-8:]}", WINDOW_S, bad_every=10**9)
    ids = _publish(publisher, topics["events"], traffic, 40)  # all there before the job: its first pull takes them
    crash = json.dumps(traffic.event(999)).encode()
    traffic.add(json.loads(crash))
    ids.append(publisher.publish(topics["events"], crash).result(timeout=30))
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(pubsub, "message_metadata", _crash_on(crash))
            first = tmp_path / "first"
            job = start_job("prism", topics["events_sub"], str(first / "agg"), str(first / "dlq"), *WINDOWS)
            with pytest.raises(Exception):  # noqa: B017 - Prism fails the job; the runner's own exception type
                job.result.wait_until_finish(duration=START_S * 1000)
            failed_at = time.monotonic()
            job.stop()
        delivered_once = dict(proxy.deliveries)
        assert set(delivered_once) == set(ids)  # the first job read every message...
        assert not proxy.acked  # ...and acknowledged none
        assert read_rows(str(first / "agg"))[1] == []

        second = tmp_path / "second"
        job = start_job("prism", topics["events_sub"], str(second / "agg"), str(second / "dlq"), *WINDOWS)
        try:
            expected = traffic.expected()
            wait_for(lambda: final_counts(read_rows(str(second / "agg"))[1]) == expected, SETTLE_S, "exact counts")
            recovered_s = time.monotonic() - failed_at
            wait_for(lambda: set(proxy.acked) == set(ids), SETTLE_S, "every message to be acknowledged")
        finally:
            job.stop()
    finally:
        proxy.stop()
    FaultReport(
        test="Pub/Sub on Prism: the first bundle fails, the job fails, a second job runs",
        load=f"{len(ids)} records published before the job",
        fault="one record makes the bundle that read every record throw",
        records_in=len(ids),
        records_out=sum(count for count, _, _ in final_counts(read_rows(str(second / "agg"))[1]).values()),
        dead_lettered=0,
        duplicates=traffic.duplicates,
        detail=f"the second job had the exact counts {recovered_s:.0f} s after the first failed",
    ).emit()
    assert final_counts(read_rows(str(second / "agg"))[1]) == expected
    assert all(proxy.deliveries[i] == 2 for i in ids)  # once to the failed job, once to the second


def test_flink_a_job_killed_before_a_checkpoint_acknowledges_nothing_and_a_restart_counts_every_message_once(
    pubsub_emulator, names, tmp_path, monkeypatch
):
    publisher, _subscriber, topics = names
    traffic = Traffic(f"frc{topics['events'][-8:]}", WINDOW_S, duplicate_every=8, bad_every=10**9)
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)
    first, second = tmp_path / "first", tmp_path / "second"
    # Flink takes the first checkpoint after a random delay between the minimum pause and the interval: both an hour.
    hourly = (
        "--runner=FlinkRunner",
        "--flink_master=[local]",
        "--checkpointing_interval=3600000",
        "--min_pause_between_checkpoints=3600000",
    )
    try:
        job = start_job(hourly, topics["events_sub"], str(first / "agg"), str(first / "dlq"), *WINDOWS)
        try:
            ids = _publish(publisher, topics["events"], traffic, 60)
            expected = traffic.expected()
            # Processed: the early panes (every second) hold every event...
            wait_for(
                lambda: final_counts(read_rows(str(first / "agg"))[1]) == expected, START_S + 120, "job 1's counts"
            )
            time.sleep(3)
            assert not proxy.acked  # ...but no checkpoint completed, so nothing is acknowledged
        finally:
            job.stop()  # the job server goes, and the Flink job with it
        killed_at = time.monotonic()
        job = start_job("flink", topics["events_sub"], str(second / "agg"), str(second / "dlq"), *WINDOWS)
        try:
            wait_for(lambda: final_counts(read_rows(str(second / "agg"))[1]) == expected, SETTLE_S, "job 2's counts")
            recovered_s = time.monotonic() - killed_at
            wait_for(lambda: set(proxy.acked) >= set(ids), SETTLE_S, "every message to be acknowledged")
        finally:
            job.stop()
    finally:
        proxy.stop()
    FaultReport(
        test="Pub/Sub on embedded Flink: job cancelled before its first checkpoint, then restarted",
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


def test_flink_restarted_from_a_checkpoint_counts_every_message_once(pubsub_emulator, names, tmp_path, monkeypatch):
    publisher, _subscriber, topics = names
    traffic = Traffic(f"fcp{topics['events'][-8:]}", WINDOW_S, duplicate_every=8, bad_every=10**9)
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)
    crash = json.dumps(traffic.event(999)).encode()
    crashed = tmp_path / "crashed"
    monkeypatch.setattr(pubsub, "message_metadata", _crash_on(crash, crashed))
    out = tmp_path / "out"
    restarts = (*RUNNERS["flink"], "--number_of_execution_retries=3", "--execution_retry_delay=1000")
    try:
        job = start_job(restarts, topics["events_sub"], str(out / "agg"), str(out / "dlq"), *WINDOWS)
        try:
            ids = _publish(publisher, topics["events"], traffic, 40)
            wait_for(lambda: set(proxy.acked) >= set(ids[:20]), START_S + 120, "checkpoints to acknowledge messages")
            traffic.add(json.loads(crash))
            ids.append(publisher.publish(topics["events"], crash).result(timeout=30))
            ids += _publish(publisher, topics["events"], traffic, 40)
            expected = traffic.expected()
            wait_for(crashed.exists, SETTLE_S, "the injected crash")
            wait_for(lambda: final_counts(read_rows(str(out / "agg"))[1]) == expected, SETTLE_S, "exact counts")
            wait_for(lambda: set(proxy.acked) >= set(ids), SETTLE_S, "every message to be acknowledged")
        finally:
            job.stop()
    finally:
        proxy.stop()
    redelivered = sum(n - 1 for n in proxy.deliveries.values())
    FaultReport(
        test="Pub/Sub on embedded Flink: a bundle crashes, Flink restores the last checkpoint",
        load=f"{len(ids)} records ({traffic.duplicates} duplicate publishes), checkpoints every second",
        fault=f"one record makes its bundle throw once; {redelivered} deliveries after the restore",
        records_in=proxy.delivered,
        records_out=sum(count for count, _, _ in final_counts(read_rows(str(out / "agg"))[1]).values()),
        dead_lettered=0,
        duplicates=traffic.duplicates + redelivered,
        detail="read after the last checkpoint = never acknowledged = redelivered and counted once",
    ).emit()
    assert final_counts(read_rows(str(out / "agg"))[1]) == expected
    assert proxy.deliveries[ids[40]] >= 2  # the crashing message came back
