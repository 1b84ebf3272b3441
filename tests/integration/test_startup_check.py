"""The start-up check against real services: Kafka (plaintext, SASL/SCRAM over TLS, mutual TLS), Pub/Sub (pstest)
and BigQuery (the emulator). What exists passes; a missing topic, subscription or table, a table that cannot take the
sink's rows, a wrong password or an untrusted certificate is one line naming the option.

And a streaming job that loses its source: Pub/Sub stops answering (a proxy in front of pstest refuses every call)
for longer than the direct runner's own reader would survive; the job keeps running, the watch warns at its interval
while the source is down and says when it answers again, and the events published after the outage are aggregated.
"""

from __future__ import annotations

import logging
import time
import uuid

import grpc
import pytest

from pipelines import job
from pipelines.graph import build_pipeline, new_pipeline
from pipelines.options import ConfigError
from pipelines.spec import resolve
from pipelines.startup_check import check_before_start
from pipelines.summary import read_rows
from services.kafka import create_topics
from tests.integration import test_kafka_security as kafka_security_tests
from tests.integration.fault_proxies import PubSubFaultProxy
from tests.integration.results import final_counts, wait_for
from tests.integration.test_bigquery_sink import Dataset
from tests.integration.test_kafka_security import CLIENT_KEY_ENV, PASSWORD_ENV, USER, _sasl_client, _topics
from tests.integration.traffic import Traffic

pytestmark = pytest.mark.integration

SAFE = ["--sink=/tmp/startup-check-unused/agg", "--dead_letter_sink=/tmp/startup-check-unused/dlq"]
# A private broker with TLS and SCRAM users, from the Kafka security tests' fixtures.
tls_files = kafka_security_tests.tls_files
password = kafka_security_tests.password
secure_kafka = kafka_security_tests.secure_kafka
secret_env = kafka_security_tests.secret_env


def _problem(*argv: str) -> str | None:
    """The start-up check's one line for ``argv`` (None: everything checked out)."""
    given = {a.split("=", 1)[0] for a in argv}
    spec = resolve([*argv, *(a for a in SAFE if a.split("=", 1)[0] not in given)])
    try:
        check_before_start(spec)
    except ConfigError as exc:
        return str(exc)
    return None


# ---- Kafka ---------------------------------------------------------------------------------------------------------


def test_kafka_topic_exists_or_is_named_missing(kafka_broker):
    bootstrap = kafka_broker.bootstrap_servers
    topic = create_topics(bootstrap, "startup")["startup"]
    assert _problem(f"--source=kafka://{bootstrap}/{topic}", "--runner=PrismRunner") is None
    assert _problem("--source=synthetic://?rate=5", f"--dead_letter_sink=kafka://{bootstrap}/{topic}") is None
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    assert _problem(f"--source=kafka://{bootstrap}/{missing}", "--runner=PrismRunner") == (
        f"--source: topic '{missing}' does not exist on {bootstrap} "
        f"(tried kafka://{bootstrap}/{missing} over PLAINTEXT)"
    )
    # A second bootstrap server that is down: the one that answers decides.
    assert _problem(f"--source=kafka://127.0.0.1:1,{bootstrap}/{topic}", "--runner=PrismRunner") is None


def test_kafka_over_sasl_ssl_and_mutual_tls(secure_kafka, tls_files, password, secret_env, monkeypatch):
    topic = _topics(_sasl_client(secure_kafka, tls_files, password))["events"]
    sasl = [
        f"--source=kafka://{secure_kafka.sasl_ssl_bootstrap_servers}/{topic}",
        "--runner=PrismRunner",
        "--kafka_security_protocol=SASL_SSL",
        f"--kafka_ssl_ca_cert={tls_files.ca}",
        f"--kafka_sasl_username={USER}",
        f"--kafka_sasl_password=env:{PASSWORD_ENV}",
    ]
    assert _problem(*sasl) is None
    missing = [sasl[0].replace(topic, "no-such-topic"), *sasl[1:]]
    assert "topic 'no-such-topic' does not exist" in _problem(*missing)
    untrusted = [*sasl[:3], f"--kafka_ssl_ca_cert={tls_files.untrusted_ca}", *sasl[4:]]
    assert "TLS failed: CERTIFICATE_VERIFY_FAILED" in _problem(*untrusted)
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    line = _problem(*sasl)
    assert line.startswith("--source: no Kafka broker answered") and "SASL authentication failed" in line
    assert "not-the-password" not in line and password not in line
    mtls = [
        f"--source=kafka://{secure_kafka.ssl_bootstrap_servers}/{topic}",
        "--runner=PrismRunner",
        "--kafka_security_protocol=SSL",
        f"--kafka_ssl_ca_cert={tls_files.ca}",
        f"--kafka_ssl_client_cert={tls_files.client_cert}",
        f"--kafka_ssl_client_key=env:{CLIENT_KEY_ENV}",
    ]
    assert _problem(*mtls) is None
    plaintext_on_tls = [mtls[0], "--runner=PrismRunner"]
    assert _problem(*plaintext_on_tls).startswith("--source: no Kafka broker answered")


# ---- Pub/Sub ---------------------------------------------------------------------------------------------------------

PROJECT = "local-project"


@pytest.fixture
def pubsub(pubsub_emulator, monkeypatch):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    publisher, subscriber = pubsub_emulator.publisher(), pubsub_emulator.subscriber()
    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"projects/{PROJECT}/topics/st-{suffix}", f"projects/{PROJECT}/subscriptions/st-{suffix}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)
    return pubsub_emulator, publisher, topic, subscription


def test_pubsub_subscription_and_topic_exist_or_are_named_missing(pubsub):
    emulator, _, topic, subscription = pubsub
    assert _problem(f"--source=pubsub://{subscription}") is None
    assert _problem(f"--source=pubsub://{topic}") is None
    assert _problem("--source=synthetic://?rate=5", f"--dead_letter_sink=pubsub://{topic}") is None
    where = f"the Pub/Sub emulator at {emulator.host} (PUBSUB_EMULATOR_HOST)"
    gone = f"projects/{PROJECT}/subscriptions/nosuchsub"
    assert _problem(f"--source=pubsub://{gone}") == f"--source: subscription {gone} does not exist on {where}"
    gone = f"projects/{PROJECT}/topics/nosuchtopic"
    assert _problem("--source=synthetic://?rate=5", f"--dead_letter_sink=pubsub://{gone}") == (
        f"--dead_letter_sink: topic {gone} does not exist on {where}"
    )


# ---- BigQuery --------------------------------------------------------------------------------------------------------


def test_bigquery_tables_exist_with_columns_that_take_the_rows(bigquery_emulator, bare_dataset):
    ds = bare_dataset
    endpoint = f"--bigquery_endpoint={bigquery_emulator.endpoint}"
    argv = ["--source=synthetic://?events=5", f"--sink={ds.uri('aggregates')}", endpoint]
    where = f"the BigQuery emulator at {bigquery_emulator.endpoint}"
    assert _problem(*argv) == (
        f"--sink: table {ds.table('aggregates')} does not exist on {where}; create it with "
        f"python -m pipelines.release.provision --dataset={ds.id}"
    )
    ds.create_table_with("aggregates")
    assert _problem(*argv) is None
    ds.create_table_with("dead_letter", error_code="REQUIRED")  # rows always have one: fine
    assert _problem(*argv, f"--dead_letter_sink={ds.uri('dead_letter')}") is None
    ds.client.delete_table(ds.table("aggregates"))
    from google.cloud import bigquery

    ds.client.create_table(
        bigquery.Table(
            ds.table("aggregates"),
            schema=[
                bigquery.SchemaField("window_start", "STRING"),
                bigquery.SchemaField("owner", "STRING", "REQUIRED"),
            ],
        )
    )
    line = _problem(*argv)
    assert line.startswith(f"--sink: table {ds.table('aggregates')} on {where} cannot take the sink's rows: ")
    assert "column window_start is STRING, the sink writes TIMESTAMP" in line
    assert "column event_count is missing" in line and "extra column owner is REQUIRED" in line


def test_a_required_column_the_sink_may_leave_null_is_a_warning_not_a_refusal(bigquery_emulator, caplog):
    ds = Dataset(bigquery_emulator, provisioned=False)
    try:
        ds.create_table_with("aggregates", key="REQUIRED")  # null keys are refused: write_rejected dead letters
        argv = ["--source=synthetic://?events=5", f"--sink={ds.uri('aggregates')}"]
        with caplog.at_level(logging.WARNING, logger="pipelines.startup_check"):
            assert _problem(*argv, f"--bigquery_endpoint={bigquery_emulator.endpoint}") is None
        assert any("column key is REQUIRED, the sink may write null" in r.getMessage() for r in caplog.records)
    finally:
        ds.drop()


# ---- a streaming source that goes away -----------------------------------------------------------------------------


class _OutageProxy(PubSubFaultProxy):
    """The Pub/Sub fault proxy, plus an outage: while on, every call is refused as UNAVAILABLE."""

    outage = False

    def call(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        if self.outage:
            context.abort(grpc.StatusCode.UNAVAILABLE, "outage injected by the test proxy")
        return super().call(method, request, context)


def test_a_streaming_job_rides_out_a_source_outage_and_the_watch_warns(pubsub, tmp_path, monkeypatch, caplog):
    _, publisher, topic, subscription = pubsub
    emulator_host = pubsub[0].host
    proxy = _OutageProxy(emulator_host).start()
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)
    spec = resolve(
        [
            f"--source=pubsub://{subscription}",
            f"--sink={tmp_path / 'agg'}",
            f"--dead_letter_sink={tmp_path / 'dlq'}",
            "--window_size=20",
            "--early_firing=2",
        ]
    )
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    watch = job.SourceWatch(spec, interval_s=3)
    traffic = Traffic(f"out{uuid.uuid4().hex[:6]}", 20, duplicate_every=10**9, bad_every=10**9)
    caplog.set_level(logging.WARNING, logger=job.__name__)

    def watch_for(seconds: float) -> None:
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            watch.tick()
            time.sleep(0.2)

    try:
        publisher.publish(topic, traffic.next()).result(timeout=30)
        wait_for(lambda: read_rows(str(tmp_path / "agg"))[1], 90, "the first aggregates")
        proxy.outage = True
        # Longer than the direct runner's reader survives alone: four failed 30 s pulls fail its job.
        watch_for(150)
        assert result.state == "RUNNING"
        warned = [r.getMessage() for r in caplog.records if "has not answered for" in r.getMessage()]
        assert 20 <= len(warned) <= 60, len(warned)  # about one per 3 s interval, never more
        assert f"source pubsub://{subscription} has not answered for" in warned[0]
        assert "did not answer" in warned[0] and "keeps retrying" in warned[0]
        proxy.outage = False
        watch_for(8)
        assert any("answers again after" in r.getMessage() for r in caplog.records)
        after = [traffic.next() for _ in range(3)]
        for payload in after:
            publisher.publish(topic, payload).result(timeout=30)
        wait_for(
            lambda: sum(count for count, _, _ in final_counts(read_rows(str(tmp_path / "agg"))[1]).values()) >= 4,
            120,
            "the events published after the outage to be aggregated",
        )
        assert result.state == "RUNNING"
    finally:
        result.cancel()
        proxy.stop()
