"""Kafka with --runner=DirectRunner, as a user runs it: the CLI, no runner flag, a real broker.

Beam's direct runners cannot run cross-language (Java) transforms; the CLI runs such a pipeline on the cached Prism,
saying so in one warning line. The known mix goes through a kafka:// source into local files, dead letters into a
kafka:// topic; once both hold everything, Ctrl-C stops the job: the summary so far is printed (exit 130), with no
gRPC traceback. A batch job (a file source) with kafka:// dead letters runs on Prism too, to its end.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

import pytest
from confluent_kafka import Consumer

from pipelines.summary import read_rows
from services.kafka import create_topics
from tests.integration.event_mix import expected_finals, mix, produce, recent_window
from tests.integration.results import final_counts
from tests.unit.test_ctrl_c import interrupt_cli

pytestmark = pytest.mark.integration


def test_kafka_source_and_dead_letter_sink_with_the_direct_runner_run_on_prism(kafka_broker, tmp_path):
    bootstrap = kafka_broker.bootstrap_servers
    topics = create_topics(bootstrap, "events", "dlq")
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    produce(bootstrap, topics["events"], [*valid, valid[0], *bad])  # valid[0] twice: a duplicate
    argv = [
        f"--source=kafka://{bootstrap}/{topics['events']}",
        f"--sink={tmp_path / 'agg'}",
        f"--dead_letter_sink=kafka://{bootstrap}/{topics['dlq']}",
        f"--kafka_consumer_group=direct-{uuid.uuid4().hex[:8]}",
        "--kafka_start_offset=earliest",
        "--allowed_lateness=600",
        "--early_firing=2",
    ]
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topics["dlq"]])
    dead: list[dict] = []

    def everything_arrived() -> bool:
        message = consumer.poll(0.2)
        if message is not None and message.error() is None:
            dead.append(json.loads(message.value()))
        return final_counts(read_rows(str(tmp_path / "agg"))[1]) == expected_finals(window_a) and len(dead) >= len(bad)

    try:
        code, out, err = interrupt_cli(argv, everything_arrived, tmp_path, timeout_s=240)
    finally:
        consumer.close()

    assert final_counts(read_rows(str(tmp_path / "agg"))[1]) == expected_finals(window_a)
    assert sorted(row["error_code"] for row in dead) == sorted(bad.values())
    assert code == 130, err[-3000:]
    assert err.count("running on Prism") == 1, err[-3000:]  # one line says so
    assert "Traceback" not in err and "CANCELLED" not in err, err[-3000:]
    lines = out.splitlines()
    assert lines[0].startswith("realtime-analytics: stopped (Ctrl-C) after ")
    assert lines[0].endswith("(DirectRunner on Prism, streaming)")
    assert next(line for line in lines if "records read" in line).split()[-1] == str(len(valid) + 1 + len(bad))
    assert "counted by the pipeline" in next(line for line in lines if "dead letters" in line)


def test_a_batch_job_with_kafka_dead_letters_and_the_direct_runner_runs_on_prism(kafka_broker, tmp_path, caplog):
    from pipelines.streaming_analytics import run

    bootstrap = kafka_broker.bootstrap_servers
    dlq = create_topics(bootstrap, "dlq")["dlq"]
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    bad = {payload: code for payload, code in bad.items() if code != "too_late"}  # batch: nothing is late
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(payload + b"\n" for payload in [*valid, *bad] if b"\n" not in payload))
    with caplog.at_level(logging.WARNING, logger="pipelines.graph"):
        summary = run(
            [f"--source={source}", f"--sink={tmp_path / 'agg'}", f"--dead_letter_sink=kafka://{bootstrap}/{dlq}"]
        )
    assert summary.mode == "DirectRunner on Prism, batch"
    assert [r.getMessage() for r in caplog.records if "running on Prism" in r.getMessage()] != []
    assert final_counts(summary.aggregate_rows) == expected_finals(window_a)
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"check-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([dlq])
    dead: list[dict] = []
    deadline = time.monotonic() + 60
    try:
        while len(dead) < len(bad) and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                dead.append(json.loads(message.value()))
    finally:
        consumer.close()
    assert sorted(row["error_code"] for row in dead) == sorted(bad.values())
