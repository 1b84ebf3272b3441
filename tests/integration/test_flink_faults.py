"""Issue 6 on Flink: the Kafka broker is killed and restarted mid-stream while the pipeline runs on the Flink session
cluster with checkpointing. The final aggregates must be exactly those of an undisturbed run of the same records, and
every record must be accounted for: records in = aggregated + dead-lettered + duplicates, lost = 0.

Load: the synthetic generator's records (valid, bad, redelivered, late within the allowed lateness) produced in real
time at RATE records/s for LOAD_S seconds to a private broker; the producer keeps going through the outage (it buffers
and retries). Dead letters go to a topic on the same broker, so the Kafka sink (KafkaIO's writer) rides the outage
too. The undisturbed run is the same records, as a file, through the batch pipeline on the direct runner (batch =
streaming is what tests/streaming proves), so any difference is the fault's. The sinks are at-least-once: a job
restarted from a checkpoint may write a dead letter twice, so dead letters count once per source offset.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import Counter

import pytest
from confluent_kafka import Consumer, Producer

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from pipelines.streaming_analytics import run
from pipelines.summary import read_rows
from services import KafkaBroker
from services.kafka import create_topics
from tests.integration.fault_report import FaultReport
from tests.integration.results import final_counts
from transforms.io.synthetic import generate_block, parse_synthetic_uri
from transforms.timefmt import now_us

RATE = 40  # records/s
LOAD_S = 30
FAULT_AT_S = 10  # into the load
DOWN_S = 1
SPEC = "synthetic://?rate=40&keys=5&users=60&event_types=3&bad=0.04&duplicates=0.04&late=0.05&late_by=60&seed=23"
# Early panes every second: the complete count of a group shows as soon as its records are processed.
WINDOWS = ["--window_size=10", "--allowed_lateness=600", "--early_firing=1"]
JOB_START_S = 180
SETTLE_S = 150


@pytest.fixture
def private_kafka():
    """A broker of this test's own: it gets killed."""
    with KafkaBroker() as broker:
        yield broker


def _undisturbed(tmp_path, payloads: list[bytes]):
    source = tmp_path / "records.jsonl"
    source.write_bytes(b"\n".join(payloads) + b"\n")
    out = tmp_path / "undisturbed"
    return run([f"--source={source}", f"--sink={out / 'agg'}", f"--dead_letter_sink={out / 'dlq'}", *WINDOWS])


class LoadProducer(threading.Thread):
    """Produces the records at ``rate``/s in real time; counts what was handed over while the broker was down."""

    def __init__(self, bootstrap: str, topic: str, payloads: list[bytes], rate: float) -> None:
        super().__init__(daemon=True)
        # librdkafka's connection errors during the outage go to Python logging (pytest keeps them), not stderr.
        self._producer = Producer(
            {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5},
            logger=logging.getLogger("load-producer"),
        )
        self._topic, self._payloads, self._rate = topic, payloads, rate
        self.delivered = 0
        self.errors: list[str] = []
        self.broker_down = threading.Event()
        self.produced_while_down = 0

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.delivered += 1
        else:
            self.errors.append(str(err))

    def run(self) -> None:
        started = time.monotonic()
        for number, payload in enumerate(self._payloads):
            delay = started + number / self._rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._producer.produce(self._topic, value=payload, on_delivery=self._on_delivery)
            self._producer.poll(0)
            if self.broker_down.is_set():
                self.produced_while_down += 1
        self.unflushed = self._producer.flush(120)


class DeadLetterReader:
    """Reads the dead-letter topic from its start; keeps one row per source offset (a restored job may write again)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"check-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        self._consumer.subscribe([topic])
        self._rows: dict[tuple[int, int], dict] = {}

    def once_per_source_offset(self) -> dict[tuple[int, int], dict]:
        for message in self._consumer.consume(num_messages=1000, timeout=1.0):
            if message.error() is None:
                row = json.loads(message.value())
                self._rows[(row["source_metadata"]["partition"], row["source_metadata"]["offset"])] = row
        return self._rows

    def close(self) -> None:
        self._consumer.close()


def test_kafka_broker_restart_on_flink_loses_nothing(private_kafka, flink_cluster, tmp_path):
    bootstrap = private_kafka.bootstrap_servers
    topics = create_topics(bootstrap, "load", "dlq")
    topic = topics["load"]
    spec = parse_synthetic_uri(SPEC)
    out = tmp_path / "flink"
    launch_spec = resolve(
        [
            f"--source=kafka://{bootstrap}/{topic}",
            f"--sink={out / 'agg'}",
            # Dead letters to a topic on the same broker: the sink goes through the outage too.
            f"--dead_letter_sink=kafka://{bootstrap}/{topics['dlq']}",
            f"--kafka_consumer_group=fault-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            *WINDOWS,
            "--runner=FlinkRunner",
            f"--flink_master={flink_cluster.flink_master}",
            "--streaming",
            "--checkpointing_interval=1000",
            "--number_of_execution_retries=30",
            "--execution_retry_delay=2000",
        ]
    )
    pipeline = new_pipeline(launch_spec)
    build_pipeline(pipeline, launch_spec)
    # Event times from now on: the load starts once the job is up, so they are a little late on arrival (well within
    # the allowed lateness), which the streaming job aggregates like the batch run does.
    payloads = [payload for _, _, payload in generate_block(spec, 0, RATE * LOAD_S, anchor_us=now_us())]
    dead_letters = DeadLetterReader(bootstrap, topics["dlq"])
    submitted = time.monotonic()
    result = pipeline.run()
    try:
        reference = _undisturbed(tmp_path, payloads)  # while the job starts
        expected = final_counts(reference.aggregate_rows)
        expected_dead = Counter(row["error_code"] for row in reference.dead_letter_rows)
        # The whole job is up once a checkpoint has completed (every operator acknowledged it).
        deadline = time.monotonic() + JOB_START_S
        job_id = None
        while time.monotonic() < deadline:
            running = [job["id"] for job in flink_cluster.jobs() if job["status"] == "RUNNING"]
            if running and flink_cluster.completed_checkpoints(running[0]) > 0:
                job_id = running[0]
                break
            time.sleep(1)
        assert job_id, "the job did not start checkpointing"
        job_up_s = time.monotonic() - submitted

        producer = LoadProducer(bootstrap, topic, payloads, RATE)
        load_started = time.monotonic()
        producer.start()
        time.sleep(FAULT_AT_S)
        producer.broker_down.set()
        fault_at = time.monotonic() - load_started
        private_kafka.restart(crash=True, down_for=DOWN_S)  # SIGKILL, down, same port and data again
        back_after = time.monotonic() - load_started - fault_at
        producer.broker_down.clear()
        producer.join(timeout=LOAD_S + 150)
        assert not producer.is_alive() and producer.unflushed == 0 and not producer.errors, producer.errors

        load_done = time.monotonic()
        deadline = time.monotonic() + SETTLE_S
        while True:
            finals = final_counts(read_rows(str(out / "agg"))[1])
            once = dead_letters.once_per_source_offset()
            if (finals == expected and len(once) == len(reference.dead_letter_rows)) or time.monotonic() > deadline:
                break
        settled_s = time.monotonic() - load_done
        restarts = flink_cluster.restarts(job_id)
    finally:
        result.cancel()
        dead_letters.close()

    report = FaultReport(
        test="Flink session cluster, Kafka broker killed and restarted",
        load=f"{RATE} records/s for {LOAD_S} s, {producer.produced_while_down} produced while the broker was down",
        fault=f"broker SIGKILLed at +{fault_at:.1f} s, serving again {back_after:.1f} s later, job restarts {restarts}",
        records_in=producer.delivered,
        records_out=sum(count for count, _, _ in finals.values()),
        dead_lettered=len(once),
        duplicates=reference.counters["duplicates"],
        detail=f"checkpointing every 1 s; job checkpointing {job_up_s:.0f} s after submission, "
        f"results complete {settled_s:.0f} s after the load ended",
    )
    report.emit()
    assert producer.delivered == len(payloads) == RATE * LOAD_S
    assert producer.produced_while_down > 0  # the load really went on through the outage
    assert finals == expected
    assert Counter(row["error_code"] for row in once.values()) == expected_dead
    assert report.lost == 0
