"""Session fixtures with real local services: Kafka, Flink, Pub/Sub (pstest), BigQuery (local-bigquery) and Prometheus
(scraping the Flink cluster), and the
BigQuery datasets and file-sink reference runs that several test modules compare against.

Each fixture reuses a server that `python -m services up` left running (if the state file lists it
and a real client can use it), otherwise starts its own on free ports and stops it after the
session. A service that cannot be installed or started fails the tests with the log tail; nothing
is skipped. SERVICES_FRESH=1 ignores running servers and always starts private ones.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, TypeVar

import pytest

from services import BigQueryEmulator, FlinkCluster, KafkaBroker, LocalService, PrometheusServer, PubSubEmulator

if TYPE_CHECKING:
    from pipelines.summary import RunSummary
    from tests.integration.test_bigquery_sink import Dataset

S = TypeVar("S", bound=LocalService)


def _provide(cls: type[S]) -> Iterator[S]:
    if os.environ.get("SERVICES_FRESH") != "1":
        running = cls.find_running()
        if running is not None:
            # Not ours to stop: `services down` owns it.
            yield running
            return
    service = cls()
    service.start()
    try:
        service.wait_healthy()
        yield service
    finally:
        service.stop()


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """A healthy Kafka broker; `.bootstrap_servers` is "127.0.0.1:PORT"."""
    yield from _provide(KafkaBroker)


@pytest.fixture(scope="session")
def pubsub_emulator() -> Iterator[PubSubEmulator]:
    """A healthy Pub/Sub emulator; `.host` is the value for PUBSUB_EMULATOR_HOST."""
    yield from _provide(PubSubEmulator)


@pytest.fixture(scope="session")
def bigquery_emulator() -> Iterator[BigQueryEmulator]:
    """A healthy BigQuery emulator; `.endpoint`, `.grpc_host`, `.project`, `.client()`."""
    yield from _provide(BigQueryEmulator)


@pytest.fixture(scope="session")
def flink_cluster() -> Iterator[FlinkCluster]:
    """A healthy Flink session cluster (JobManager + TaskManager); `.flink_master` is the value for --flink_master.

    Shared by the session. What a test leaves running there is cancelled after it (the autouse fixture below), so a
    cluster from `services up` gets its slots back (jobs that ran there before the tests are left alone).
    """
    yield from _provide(FlinkCluster)


@pytest.fixture(autouse=True)
def _flink_jobs_of_the_test_cancelled(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test on the shared session cluster, the jobs it started and left running are cancelled through
    Flink's REST API: Beam's ``result.cancel()`` stops the job's invocation in the job server, not the job on the
    cluster, and a job left running keeps its task slot, so the next test's job waits for one and fails."""
    if "flink_cluster" not in request.fixturenames:
        yield
        return
    cluster: FlinkCluster = request.getfixturevalue("flink_cluster")
    before = {job["id"] for job in cluster.jobs()}
    yield
    cluster.cancel_running_jobs(keep=before)


@pytest.fixture(scope="session")
def prometheus(flink_cluster: FlinkCluster) -> Iterator[PrometheusServer]:
    """A healthy Prometheus scraping ``flink_cluster``'s JobManager and TaskManager, with the alert rules of this
    working tree (monitoring/prometheus/alerts.yml); ``.query(promql)``, ``.alerts()``, ``.url``.

    Always a private one, never the server `services up` left running: that one loaded the rule file as it was when
    it started. Prometheus starts in about a second.
    """
    with PrometheusServer.for_cluster(flink_cluster) as server:
        yield server


@pytest.fixture
def dataset(bigquery_emulator: BigQueryEmulator) -> Iterator[Dataset]:
    """A fresh dataset on the emulator, provisioned by pipelines.release.provision; dropped afterwards."""
    from tests.integration.test_bigquery_sink import Dataset

    ds = Dataset(bigquery_emulator)
    yield ds
    ds.drop()


@pytest.fixture
def bare_dataset(bigquery_emulator: BigQueryEmulator) -> Iterator[Dataset]:
    """A fresh empty dataset (tests create the tables they need); dropped afterwards."""
    from tests.integration.test_bigquery_sink import Dataset

    ds = Dataset(bigquery_emulator, provisioned=False)
    yield ds
    ds.drop()


@pytest.fixture(scope="session")
def file_run(tmp_path_factory):
    """The reference: a pipeline into local JSON-lines files, run once per argument list for the whole session."""
    from pipelines.streaming_analytics import run

    runs: dict[tuple[str, ...], RunSummary] = {}

    def reference(*argv: str) -> RunSummary:
        if argv not in runs:
            out = tmp_path_factory.mktemp("files")
            runs[argv] = run([*argv, f"--sink={out / 'agg'}", f"--dead_letter_sink={out / 'dlq'}"])
        return runs[argv]

    return reference


def pytest_terminal_summary(terminalreporter) -> None:
    from tests.integration.fault_report import REPORTS

    if REPORTS:
        terminalreporter.section("fault reports")
        for line in REPORTS:
            terminalreporter.write_line(line)
