"""Pub/Sub (Google's pstest emulator, a real gRPC server) on Prism and on Flink's embedded cluster: the pull source
(transforms/io/pubsub_pull.py), which acknowledges through bundle finalization.

- the known mix (valid events in two windows, a redelivered duplicate, malformed, invalid and far-late records) gives
  the exact final aggregates, and every dead letter reaches its Pub/Sub topic byte for byte, with the message's
  id, attributes and publish time; from a subscription and from a topic (the job's own temporary subscription);
- a message redelivered after its ack deadline is deduplicated: the pipeline reads through ``PubSubFaultProxy``,
  which swallows its acknowledgements for a while, so pstest redelivers those messages when their deadline expires;
  the counts stay exact;
- a broken message is dead-lettered once and acknowledged: it is delivered once, its acknowledgement reaches
  pstest, and once the job is gone nothing is left in the subscription.

The pipelines run in this process (LOOPBACK workers), so PUBSUB_EMULATOR_HOST set here reaches them.
"""

from __future__ import annotations

import base64
import json
import time
from collections import Counter

import pytest

from pipelines.summary import read_rows
from tests.integration.event_mix import expected_finals, mix, recent_window
from tests.integration.fault_proxies import PubSubFaultProxy
from tests.integration.fault_report import FaultReport
from tests.integration.pubsub_jobs import (
    ACK_DEADLINE_S,
    PROJECT,
    RUNNERS,
    create_names,
    left_in,
    pull_all,
    running_source_metrics,
    settled_value,
    start_job,
)
from tests.integration.results import final_counts, wait_for
from tests.integration.traffic import SteadyPublisher, Traffic
from transforms import metrics

pytestmark = pytest.mark.integration

START_S = 240  # a job on the embedded Flink takes a while to start on a loaded machine
SETTLE_S = 180


@pytest.fixture
def names(pubsub_emulator, monkeypatch):
    return create_names(pubsub_emulator, monkeypatch)


def wait_for_subscription(publisher, topic: str, known: str, timeout_s: float) -> str:
    """A topic source subscribes when its first reader starts: publish only once that subscription exists."""
    found: list[str] = []

    def subscribed() -> bool:
        found[:] = [s for s in publisher.list_topic_subscriptions(topic=topic) if s != known]
        return bool(found)

    wait_for(subscribed, timeout_s, f"the job to subscribe to {topic}")
    return found[0]


@pytest.mark.parametrize(("runner", "read_from"), [(r, f) for r in RUNNERS for f in ("subscription", "topic")])
def test_known_mix_gives_exact_aggregates_and_every_dead_letter(names, tmp_path, runner, read_from):
    publisher, subscriber, topics = names
    source = topics["events_sub"] if read_from == "subscription" else topics["events"]
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    job = start_job(runner, source, str(tmp_path / "aggregates"), f"pubsub://{topics['dlq']}", "--allowed_lateness=600")
    try:
        if read_from == "topic":
            temporary = wait_for_subscription(publisher, topics["events"], topics["events_sub"], START_S)
            assert temporary.startswith(f"projects/{PROJECT}/subscriptions/pull-")
        for payload in [*valid, valid[0], *bad]:  # valid[0] again: a redelivery, dropped as a duplicate
            publisher.publish(topics["events"], payload, origin="test").result(timeout=30)
        deadline = time.monotonic() + START_S + SETTLE_S
        dead = pull_all(subscriber, topics["dlq_sub"], len(bad), deadline)
        expected = expected_finals(window_a)
        wait_for(
            lambda: final_counts(read_rows(str(tmp_path / "aggregates"))[1]) == expected,
            max(deadline - time.monotonic(), 1),
            "the exact final aggregates",
        )
    finally:
        job.stop()

    assert final_counts(read_rows(str(tmp_path / "aggregates"))[1]) == expected
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


RATE = 10
WINDOW_S = 20


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_a_message_redelivered_after_its_ack_deadline_is_deduplicated(
    pubsub_emulator, names, tmp_path, monkeypatch, runner
):
    publisher, _subscriber, topics = names
    suffix = topics["events"].rsplit("-", 1)[1]
    traffic = Traffic(f"prd{runner}{suffix}", WINDOW_S, bad_every=10**9)
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)  # the pipeline talks to Pub/Sub through the proxy
    aggregates = str(tmp_path / "aggregates")
    windows = (f"--window_size={WINDOW_S}", "--early_firing=2", "--allowed_lateness=600")
    job = start_job(runner, topics["events_sub"], aggregates, str(tmp_path / "dead_letter"), *windows)
    load = SteadyPublisher(publisher, topics["events"], RATE, traffic.next)
    try:
        wait_for(lambda: proxy.pulls > 0, START_S, "the job to pull")
        load.start()
        time.sleep(4)
        proxy.drop_acks(True)  # acknowledgements lost: pstest redelivers when the deadlines expire
        time.sleep(8)
        proxy.drop_acks(False)
        time.sleep(6)
        load.stop()
        expected = traffic.expected()
        last = {"delivered": 0, "at": time.monotonic()}

        def settled() -> bool:
            if proxy.delivered != last["delivered"]:
                last.update(delivered=proxy.delivered, at=time.monotonic())
            quiet = time.monotonic() - last["at"] > ACK_DEADLINE_S + 5  # nothing left to redeliver
            return quiet and final_counts(read_rows(aggregates)[1]) == expected

        wait_for(settled, SETTLE_S, "every message, redeliveries included, to be processed")
    finally:
        job.stop()
        proxy.stop()

    finals = final_counts(read_rows(aggregates)[1])
    published = traffic.count
    report = FaultReport(
        test=f"Pub/Sub pull source on {runner}: lost acknowledgements",
        load=f"{RATE} records/s published for {load.seconds:.0f} s ({published} records)",
        fault=(
            f"the pipeline's acks dropped for 8 s ({proxy.acks_dropped} ack ids: {proxy.redelivered} redeliveries "
            f"after the {ACK_DEADLINE_S} s deadline), {traffic.duplicates} duplicate publishes"
        ),
        records_in=proxy.delivered,
        records_out=sum(count for count, _, _ in finals.values()),
        dead_lettered=0,
        duplicates=traffic.duplicates + proxy.redelivered,
        detail=f"{published} published, {proxy.delivered} delivered to the pipeline",
    )
    report.emit()
    assert proxy.acks_dropped > 0 and proxy.redelivered > 0
    assert finals == expected
    assert proxy.delivered == published + proxy.redelivered  # every message reached the pipeline
    assert report.lost == 0


@pytest.mark.parametrize("runner", list(RUNNERS))
def test_a_broken_message_is_dead_lettered_once_and_acknowledged(pubsub_emulator, names, tmp_path, monkeypatch, runner):
    publisher, subscriber, topics = names
    window_a = recent_window()
    valid, _bad = mix("json", window_a)
    broken = b'{"event_id": "broken-1", "event_type": '  # cut short: malformed_json
    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)
    aggregates, dead_letters = str(tmp_path / "aggregates"), str(tmp_path / "dead_letter")
    job = start_job(runner, topics["events_sub"], aggregates, dead_letters, "--allowed_lateness=600")
    try:
        ids = [publisher.publish(topics["events"], p).result(timeout=30) for p in [*valid[:3], broken, *valid[3:]]]
        broken_id = ids[3]
        wait_for(lambda: read_rows(dead_letters)[1], START_S + SETTLE_S, "the broken message's dead letter")
        wait_for(lambda: set(proxy.acked) >= set(ids), SETTLE_S, "every message to be acknowledged")
        time.sleep(ACK_DEADLINE_S + 5)  # an unacknowledged message would be redelivered by now
        dead = read_rows(dead_letters)[1]
        if runner == "prism":  # the embedded Flink's job server reports metrics once the job has ended
            source = {
                metrics.PUBSUB_MESSAGES_PULLED: len(ids),
                metrics.PUBSUB_MESSAGES_ACKNOWLEDGED: len(ids),
                metrics.PUBSUB_MESSAGES_RELEASED: 0,
                metrics.PUBSUB_MESSAGES_OUTSTANDING: 0,
            }
            assert settled_value(lambda: running_source_metrics(job), source, 30) == source
    finally:
        job.stop()
        proxy.stop()
    time.sleep(2)
    assert [base64.b64decode(row["payload"]) for row in dead] == [broken]
    assert dead[0]["error_code"] == "malformed_json" and dead[0]["source_metadata"]["message_id"] == broken_id
    assert proxy.deliveries[broken_id] == 1 and proxy.acked[broken_id] >= 1
    assert all(proxy.deliveries[i] == 1 for i in ids)  # nothing redelivered
    assert left_in(subscriber, topics["events_sub"]) == []
