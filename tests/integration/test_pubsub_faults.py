"""Pub/Sub faults against the real emulator (pstest): redelivery and duplicates counted once, poison messages
dead-lettered without blocking the subscription.

Redelivery is real: the pipeline reads through ``PubSubFaultProxy``, which swallows its acknowledgements for a
while, so pstest redelivers those messages when their 10 s ack deadline expires; before the pipeline starts, a
competing subscriber takes messages and never acknowledges them (half are nacked, half left to expire), so the
pipeline gets them as redeliveries. On top of that, some events are published twice (new message id, same bytes).
"""

from __future__ import annotations

import base64
import gc
import json
import time
import uuid
from collections import Counter
from typing import Any

import apache_beam as beam
import pytest

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from pipelines.summary import read_rows
from tests.integration.fault_proxies import PubSubFaultProxy
from tests.integration.fault_report import FaultReport
from tests.integration.results import final_counts, wait_for
from tests.integration.traffic import SteadyPublisher, Traffic
from tests.streaming.test_poison_records import poisoned
from transforms import dedup, event_time, windowing

pytestmark = pytest.mark.integration

PROJECT = "local-project"
ACK_DEADLINE_S = 10  # pstest's minimum
RATE = 10
WINDOW_S = 20
HELD_BY_COMPETITOR = 20


@pytest.fixture
def names(pubsub_emulator):
    publisher, subscriber = pubsub_emulator.publisher(), pubsub_emulator.subscriber()
    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"projects/{PROJECT}/topics/psf-{suffix}", f"projects/{PROJECT}/subscriptions/psf-{suffix}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=ACK_DEADLINE_S)
    return publisher, subscriber, topic, subscription, suffix


def _start(subscription: str, tmp_path) -> tuple[beam.Pipeline, Any, str, str]:
    spec = resolve(
        [
            f"--source=pubsub://{subscription}",
            f"--sink={tmp_path / 'aggregates'}",
            f"--dead_letter_sink={tmp_path / 'dead_letter'}",
            f"--window_size={WINDOW_S}",
            "--early_firing=5",
            "--allowed_lateness=600",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    return pipeline, pipeline.run(), str(tmp_path / "aggregates"), str(tmp_path / "dead_letter")


def _stop(pipeline: beam.Pipeline, result: Any) -> None:
    result.cancel()
    del pipeline, result
    gc.collect()


def test_redeliveries_and_duplicate_publishes_are_counted_once(pubsub_emulator, names, tmp_path, monkeypatch):
    publisher, subscriber, topic, subscription, suffix = names
    traffic = Traffic(f"psr{suffix}", WINDOW_S)

    # A competing subscriber takes the first messages and never acknowledges them: half nacked (redelivered at
    # once), half left to expire after the ack deadline.
    for n in range(HELD_BY_COMPETITOR):
        publisher.publish(topic, traffic.add(traffic.event(10_000 + n))).result(timeout=30)
    held = []
    wait_for(
        lambda: (
            held.extend(subscriber.pull(subscription=subscription, max_messages=50, timeout=5).received_messages)
            or len(held) >= HELD_BY_COMPETITOR
        ),
        30,
        "the competitor to take its messages",
    )
    subscriber.modify_ack_deadline(
        subscription=subscription, ack_ids=[m.ack_id for m in held[::2]], ack_deadline_seconds=0
    )
    competitor_ids = {m.message.message_id for m in held}

    proxy = PubSubFaultProxy(pubsub_emulator.host).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)  # the pipeline talks to Pub/Sub through the proxy
    pipeline, result, aggregates, dead_letters = _start(subscription, tmp_path)
    load = SteadyPublisher(publisher, topic, RATE, traffic.next)
    try:
        load.start()
        time.sleep(3)
        proxy.drop_acks(True)  # acknowledgements lost: pstest redelivers when the deadlines expire
        time.sleep(8)
        proxy.drop_acks(False)
        time.sleep(14)
        load.stop()
        published = traffic.count + HELD_BY_COMPETITOR
        expected = traffic.expected()
        last = {"delivered": 0, "at": time.monotonic()}

        def settled() -> bool:
            if proxy.delivered != last["delivered"]:
                last.update(delivered=proxy.delivered, at=time.monotonic())
            quiet = time.monotonic() - last["at"] > ACK_DEADLINE_S + 4  # nothing left to redeliver
            return (
                quiet
                and final_counts(read_rows(aggregates)[1]) == expected
                and len(read_rows(dead_letters)[1]) >= len(traffic.bad)
            )

        wait_for(settled, 180, "every message, redeliveries included, to be processed")
    finally:
        _stop(pipeline, result)
        proxy.stop()

    finals = final_counts(read_rows(aggregates)[1])
    dead = read_rows(dead_letters)[1]
    delivered, redelivered = proxy.delivered, proxy.redelivered
    # A redelivered valid event is dropped by the dedup; a redelivered bad record is dead-lettered again (it has no
    # event_id to deduplicate on; its dead letters carry the same message_id).
    bad_again = proxy.redelivered_of(set(traffic.bad))
    expected_duplicates = traffic.duplicates + redelivered - bad_again
    report = FaultReport(
        test="Pub/Sub redelivery + duplicate publishes",
        load=f"{RATE} records/s published for {load.seconds:.0f} s ({published} records)",
        fault=(
            f"{HELD_BY_COMPETITOR} messages held by a competing subscriber (half nacked, half left to expire), "
            f"the pipeline's acks dropped for 8 s ({proxy.acks_dropped} ack ids: {redelivered} redeliveries), "
            f"{traffic.duplicates} duplicate publishes"
        ),
        records_in=delivered,
        records_out=sum(count for count, _, _ in finals.values()),
        dead_lettered=len(dead),
        duplicates=expected_duplicates,
        detail=(
            f"{published} published, {delivered} delivered to the pipeline; dead letters: {len(traffic.bad)} bad "
            f"records + {bad_again} redeliveries of them"
        ),
    )
    report.emit()
    assert finals == expected
    dead_payloads = Counter(base64.b64decode(r["payload"]) for r in dead)
    assert set(dead_payloads) == set(traffic.bad) and dead_payloads.total() == len(traffic.bad) + bad_again
    assert delivered == published + redelivered  # every published message reached the pipeline
    assert competitor_ids <= set(proxy.deliveries)  # the competitor's messages came back to the pipeline
    assert proxy.acks_dropped > 0 and redelivered > 0 and traffic.duplicates > 0
    assert report.lost == 0  # delivered = aggregated + dead letters + (duplicate publishes + redeliveries)


POISON_TIME_US = {"dedup": 777_777, "window": 888_888}


def test_poison_messages_are_dead_lettered_and_the_subscription_keeps_flowing(
    pubsub_emulator, names, tmp_path, monkeypatch
):
    """Three messages that make three different steps throw (injected in this process: the direct runner runs
    the steps here); the messages before and after them are aggregated exactly and nothing blocks."""
    publisher, _subscriber, topic, subscription, suffix = names
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    monkeypatch.setattr(
        event_time,
        "rows_of",
        poisoned(event_time.rows_of, lambda _b, valid, *_: any(v[1].endswith("-poison") for v in valid)),
    )
    monkeypatch.setattr(
        dedup, "is_duplicate", poisoned(dedup.is_duplicate, lambda _f, t, _h: t % 1_000_000 == POISON_TIME_US["dedup"])
    )
    monkeypatch.setattr(
        windowing,
        "latest_deadline_us",
        poisoned(windowing.latest_deadline_us, lambda _w, t, _l: t % 1_000_000 == POISON_TIME_US["window"]),
    )
    traffic = Traffic(f"psp{suffix}", WINDOW_S, duplicate_every=10**9, bad_every=10**9)
    now_s = time.time_ns() // 1_000_000_000
    poisons = {
        "event_time": json.dumps(traffic.event(900, event_id=f"psp{suffix}-poison")).encode(),
        "dedup": json.dumps(traffic.event(901, at_us=now_s * 1_000_000 + POISON_TIME_US["dedup"])).encode(),
        "window": json.dumps(traffic.event(902, at_us=now_s * 1_000_000 + POISON_TIME_US["window"])).encode(),
    }
    pipeline, result, aggregates, dead_letters = _start(subscription, tmp_path)
    queue = [traffic.next] * 30 + [lambda p=p: p for p in poisons.values()] + [traffic.next] * 30
    feed = iter(queue)
    load = SteadyPublisher(publisher, topic, RATE, lambda: next(feed)(), limit=len(queue))
    try:
        load.start()
        load.join(timeout=60)
        load.stop()
        expected = traffic.expected()
        wait_for(
            lambda: (
                final_counts(read_rows(aggregates)[1]) == expected and len(read_rows(dead_letters)[1]) >= len(poisons)
            ),
            120,
            "the events after the poison messages to be aggregated",
        )
    finally:
        _stop(pipeline, result)

    finals = final_counts(read_rows(aggregates)[1])
    dead = read_rows(dead_letters)[1]
    by_stage = {row["stage"]: row for row in dead}
    report = FaultReport(
        test="Poison messages",
        load=f"{RATE} records/s: 30 events, 3 poison messages, 30 more events",
        fault="one message each makes AssignEventTime, DeduplicateEvents and FilterTooLate throw",
        records_in=load.published,
        records_out=sum(count for count, _, _ in finals.values()),
        dead_lettered=len(dead),
        duplicates=0,
        detail="dead letters: " + ", ".join(f"{r['stage']}: {r['error_message']}" for r in dead),
    )
    report.emit()
    assert finals == expected  # the 60 events, before and after the poison, exactly
    assert len(dead) == 3 and set(by_stage) == set(poisons)
    for stage, payload in poisons.items():
        row = by_stage[stage]
        assert row["error_code"] == "processing_error" and row["error_field"] is None
        assert base64.b64decode(row["payload"]) == payload
        assert row["source"] == subscription and row["source_metadata"]["message_id"]
        assert row["error_message"].endswith("failed: RuntimeError: poison record")
    assert report.lost == 0
