"""Real local services for tests and development: Kafka, Flink, Pub/Sub (pstest), BigQuery (local-bigquery),
Prometheus (scraping the Flink cluster).

Not part of the installed pipeline. Each service is a plain process on 127.0.0.1 with its own
temp work dir; downloads and builds are cached under .cache/. Use a service as a context manager,
through the pytest fixtures in tests/integration/conftest.py, or via `python -m services up|down|status`.
"""

from __future__ import annotations

from services._process import ServiceError
from services._service import LocalService
from services.bigquery import BigQueryEmulator
from services.flink import FlinkCluster
from services.kafka import KafkaBroker, SecureKafkaBroker
from services.prometheus import PrometheusServer
from services.pubsub import PubSubEmulator

# Order matters for `services up`: the JVMs take longest, so they start first.
SERVICES: dict[str, type[LocalService]] = {
    KafkaBroker.name: KafkaBroker,
    FlinkCluster.name: FlinkCluster,
    PubSubEmulator.name: PubSubEmulator,
    BigQueryEmulator.name: BigQueryEmulator,
    # After Flink: it scrapes the cluster's metrics reporters.
    PrometheusServer.name: PrometheusServer,
}

__all__ = [
    "SERVICES",
    "BigQueryEmulator",
    "FlinkCluster",
    "KafkaBroker",
    "LocalService",
    "PrometheusServer",
    "PubSubEmulator",
    "SecureKafkaBroker",
    "ServiceError",
]
