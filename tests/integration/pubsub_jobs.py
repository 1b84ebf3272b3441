"""Starting and stopping the main job on a Pub/Sub source, for the pull-source tests (Prism, Flink).

A job on Flink gets a Flink job server of its own (Beam starts one per job anyway, and stops it only when the process
exits), and stopping the job stops that server: cancelling through Beam's job service interrupts the job's
invocation, not the Flink job. On the embedded Flink, which runs inside the job server's JVM, stopping the server is
what "killing the job" means; a job on the session cluster is cancelled through Flink's REST API first
(test_pubsub_flink_cluster.py).
"""

from __future__ import annotations

import gc
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_job_api_pb2
from apache_beam.runners.portability.flink_runner import FlinkJarJobServer, FlinkRunner

from pipelines import runners
from pipelines.graph import build_pipeline
from pipelines.spec import resolve
from transforms import metrics

T = TypeVar("T")

PROJECT = "local-project"
ACK_DEADLINE_S = 10  # pstest's minimum, and Pub/Sub's default
RUNNERS: dict[str, tuple[str, ...]] = {
    "prism": ("--runner=PrismRunner",),
    # Flink acknowledges when a checkpoint completes: checkpoints every second.
    "flink": ("--runner=FlinkRunner", "--flink_master=[local]", "--checkpointing_interval=1000"),
}


class _FlinkRunnerWithServer(FlinkRunner):
    """Beam's FlinkRunner with a job server the test holds (Beam's own is only stopped when the process exits)."""

    def __init__(self, job_server: FlinkJarJobServer) -> None:
        super().__init__()
        self._job_server = job_server

    def default_job_server(self, options: PipelineOptions) -> FlinkJarJobServer:
        return self._job_server


@dataclass
class Job:
    pipeline: beam.Pipeline
    result: Any
    job_server: Any = None  # the Flink job server, stopped with the job
    started: float = field(default_factory=time.monotonic)

    def stop(self) -> None:
        """Cancels the job; on Flink also stops its job server (and so the embedded Flink's job)."""
        try:
            self.result.cancel()
        finally:
            if self.job_server is not None:
                self.job_server.stop()
                self.job_server = None
            self.pipeline = self.result = None
            gc.collect()  # Beam's finalizers run now, while the emulator is still up


def start_job(runner: str | tuple[str, ...], source: str, sink: str, dead_letter_sink: str, *extra: str) -> Job:
    """Builds and starts the main job reading ``pubsub://source`` on ``runner`` (a RUNNERS key or the runner flags)."""
    runner_args = RUNNERS[runner] if isinstance(runner, str) else runner
    spec = resolve(
        [
            f"--source=pubsub://{source}",
            f"--sink={sink}",
            f"--dead_letter_sink={dead_letter_sink}",
            "--streaming",
            *extra,
            *runner_args,
        ]
    )
    # What graph.new_pipeline does, but on Flink with a job server the test holds.
    options = runners.beam_options(spec.runner, spec.argv)  # the cached Prism / Flink job server jar
    engine = runners.runner_object(spec.runner)
    job_server = None
    if spec.runner.engine == runners.FLINK:
        job_server = FlinkJarJobServer(options)
        engine = _FlinkRunnerWithServer(job_server)
    try:
        pipeline = beam.Pipeline(runner=engine, options=options)
        build_pipeline(pipeline, spec)
        return Job(pipeline, pipeline.run(), job_server)
    except BaseException:
        if job_server is not None:
            job_server.stop()
        raise


def create_names(pubsub_emulator, monkeypatch, prefix: str = "pull") -> tuple[Any, Any, dict[str, str]]:
    """A fresh events topic + subscription (ack deadline ACK_DEADLINE_S) and a dead-letter topic + subscription;
    PUBSUB_EMULATOR_HOST points this process (and the LOOPBACK workers in it) at pstest."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    publisher, subscriber = pubsub_emulator.publisher(), pubsub_emulator.subscriber()
    suffix = uuid.uuid4().hex[:8]
    names = {
        "events": f"projects/{PROJECT}/topics/{prefix}-{suffix}",
        "events_sub": f"projects/{PROJECT}/subscriptions/{prefix}-{suffix}",
        "dlq": f"projects/{PROJECT}/topics/{prefix}-dlq-{suffix}",
        "dlq_sub": f"projects/{PROJECT}/subscriptions/{prefix}-dlq-{suffix}",
    }
    publisher.create_topic(name=names["events"])
    publisher.create_topic(name=names["dlq"])
    subscriber.create_subscription(name=names["events_sub"], topic=names["events"], ack_deadline_seconds=ACK_DEADLINE_S)
    subscriber.create_subscription(name=names["dlq_sub"], topic=names["dlq"])
    return publisher, subscriber, names


def pull_all(subscriber, subscription: str, expected: int, deadline: float) -> list:
    """Pulls (and acknowledges) until ``expected`` messages arrived or ``deadline`` (monotonic) passed."""
    received: list = []
    while len(received) < expected and time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=100, timeout=5)
        if response.received_messages:
            received.extend(m.message for m in response.received_messages)
            subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])
        else:
            time.sleep(0.5)
    return received


def left_in(subscriber, subscription: str) -> list:
    """Messages the subscription would deliver now (call once their ack deadline has passed)."""
    response = subscriber.pull(subscription=subscription, max_messages=1000, timeout=10)
    return [m.message for m in response.received_messages]


# The pull source's own metrics (transforms/metrics.py).
SOURCE_COUNTERS = (
    metrics.PUBSUB_MESSAGES_PULLED,
    metrics.PUBSUB_MESSAGES_ACKNOWLEDGED,
    metrics.PUBSUB_MESSAGES_RELEASED,
)
SOURCE_GAUGE = metrics.PUBSUB_MESSAGES_OUTSTANDING


def running_source_metrics(job: Job) -> dict[str, int]:
    """The pull source's counters and gauge as the job service reports them for the running job (Prism answers while
    the job runs; Beam's ``result.metrics()`` keeps its first answer, so ask the job service each time)."""
    from apache_beam.runners.portability.portable_runner import PortableMetrics

    result = job.result
    response = result._job_service.GetJobMetrics(beam_job_api_pb2.GetJobMetricsRequest(job_id=result._job_id))
    found = PortableMetrics(response).query(MetricsFilter().with_namespace(metrics.NAMESPACE))
    values = {name: 0 for name in SOURCE_COUNTERS}
    for counter in found["counters"]:
        if counter.key.metric.name in SOURCE_COUNTERS:
            values[counter.key.metric.name] = counter.committed or counter.attempted or 0
    for gauge in found["gauges"]:
        if gauge.key.metric.name == SOURCE_GAUGE:
            values[SOURCE_GAUGE] = (gauge.committed or gauge.attempted).value
    return values


def settled_value(get: Callable[[], T], expected: T, timeout_s: float) -> T:
    """Polls ``get`` every second until it returns ``expected`` or ``timeout_s`` passed; returns its last value, for
    the test to assert on (so a failure shows what was there)."""
    deadline = time.monotonic() + timeout_s
    value = get()
    while value != expected and time.monotonic() < deadline:
        time.sleep(1)
        value = get()
    return value
