"""BigQuery unavailable, then answering 5xx after storing rows, in the middle of a live run: every row lands once.

Real services end to end: events are published to Pub/Sub (pstest) at a steady rate for the whole test; the
streaming pipeline writes aggregates and dead letters to the BigQuery emulator through ``BigQueryFaultProxy``.
Once rows are landing, the proxy cuts BigQuery off for ``OUTAGE_S`` (503s, reset connections, per-row
``backendError``s in turn), lets it recover, then for ``LOST_ACK_S`` loses the answer of every call after
BigQuery stored its rows (500s, reset connections). Then:

- the final aggregates equal those of the published events, exactly; each bad record is one dead letter;
- every aggregate row the pipeline emitted (a copy goes to local files) is in the table, and no
  (window, event_type, key, pane_index) is there twice: retried rows were neither lost nor duplicated.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections import Counter

import pytest

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.spec import resolve
from pipelines.summary import read_rows
from tests.integration.fault_proxies import LOST_ACK, OUTAGE, BigQueryFaultProxy
from tests.integration.fault_report import FaultReport
from tests.integration.results import final_counts, wait_for
from tests.integration.test_bigquery_sink import _aggregates, _dead_letters
from tests.integration.traffic import SteadyPublisher, Traffic
from transforms.io.files import WriteJsonLines
from transforms.timefmt import now_us

pytestmark = pytest.mark.integration

PROJECT = "local-project"
RATE = 8  # records per second, for the whole test
WINDOW_S = 20
OUTAGE_S = 20
RECOVERY_S = 5
LOST_ACK_S = 15
QUIET_S = 8  # no new aggregate row for this long after the last window closed: the run is over


def _pane_key(row: dict) -> tuple:
    return (row["window_start"], row["window_end"], row["event_type"], row["key"], row["pane_index"])


@pytest.fixture
def proxy(bigquery_emulator):
    proxy = BigQueryFaultProxy(bigquery_emulator.endpoint).start()
    yield proxy
    proxy.stop()


def test_bigquery_outage_and_lost_answers_mid_run_lose_and_duplicate_nothing(
    pubsub_emulator, dataset, proxy, tmp_path, monkeypatch
):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
    publisher, subscriber = pubsub_emulator.publisher(), pubsub_emulator.subscriber()
    suffix = uuid.uuid4().hex[:8]
    topic, subscription = f"projects/{PROJECT}/topics/bqf-{suffix}", f"projects/{PROJECT}/subscriptions/bqf-{suffix}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)

    spec = resolve(
        [
            f"--source=pubsub://{subscription}",
            f"--sink={dataset.uri('aggregates')}",
            f"--dead_letter_sink={dataset.uri('dead_letter')}",
            f"--bigquery_endpoint={proxy.endpoint}",  # the pipeline sees BigQuery only through the proxy
            f"--window_size={WINDOW_S}",
            "--early_firing=5",
            "--allowed_lateness=600",
        ]
    )
    pipeline = new_pipeline(spec)
    outputs = build_pipeline(pipeline, spec)
    emitted_prefix = str(tmp_path / "emitted")
    outputs.aggregates | "CopyOfEmittedRows" >> WriteJsonLines(emitted_prefix)  # what the sink was given
    result = pipeline.run()

    traffic = Traffic(f"bqf{suffix}", WINDOW_S)
    load = SteadyPublisher(publisher, topic, RATE, traffic.next)
    load.start()
    try:
        wait_for(lambda: proxy.insert_calls_passed >= 3, 90, "the first rows to land")  # mid-run from here on
        proxy.set_mode(OUTAGE)
        time.sleep(OUTAGE_S)
        proxy.set_mode(None)
        time.sleep(RECOVERY_S)
        proxy.set_mode(LOST_ACK)
        time.sleep(LOST_ACK_S)
        proxy.set_mode(None)
        time.sleep(RECOVERY_S)
        load.stop()
        expected = traffic.expected()
        last_window_end_us = traffic.last_window_end_us()

        state = {"emitted": 0, "changed": time.monotonic()}

        def finished() -> bool:
            emitted = read_rows(emitted_prefix)[1]
            if len(emitted) != state["emitted"]:
                state.update(emitted=len(emitted), changed=time.monotonic())
            landed = _aggregates(dataset.client, dataset.table("aggregates"))
            return (
                now_us() > last_window_end_us + 5_000_000
                and time.monotonic() - state["changed"] > QUIET_S
                and final_counts(landed) == expected
                and len(landed) >= len(emitted)
            )

        wait_for(finished, 300, "every emitted row to land")
    finally:
        proxy.set_mode(None)
        result.cancel()

    emitted = read_rows(emitted_prefix)[1]
    landed = _aggregates(dataset.client, dataset.table("aggregates"))
    dead = _dead_letters(dataset.client, dataset.table("dead_letter"))
    repeated = {key: n for key, n in Counter(map(_pane_key, landed)).items() if n > 1}
    missing = set(map(_pane_key, emitted)) - set(map(_pane_key, landed))
    dead_payloads = Counter(base64.b64decode(row["payload"]) for row in dead)

    report = FaultReport(
        test="BigQuery outage + lost answers",
        load=f"{RATE} records/s published for {load.seconds:.0f} s, through both faults",
        fault=(
            f"BigQuery cut off for {OUTAGE_S} s mid-run (503 x{proxy.faults['http_503']}, connection reset "
            f"x{proxy.faults['connection_reset']}, per-row backendError x{proxy.faults['row_backend_errors']}), "
            f"then answers lost after storing for {LOST_ACK_S} s (500 x{proxy.faults['stored_then_http_500']}, "
            f"reset x{proxy.faults['stored_then_connection_reset']})"
        ),
        records_in=traffic.count,
        records_out=sum(count for count, _, _ in final_counts(landed).values()),
        dead_lettered=len(dead),
        duplicates=traffic.duplicates,
        detail=(
            f"aggregate rows emitted {len(emitted)}, in BigQuery {len(landed)}, duplicated {len(repeated)}, "
            f"missing {len(missing)}; insertAll calls {proxy.insert_calls} ({proxy.insert_calls_passed} passed); "
            f"{proxy.ids_stored_more_than_once} insert ids reached BigQuery again after a lost answer and were "
            "deduplicated"
        ),
    )
    report.emit()
    assert traffic.count == load.published
    assert final_counts(landed) == traffic.expected()
    assert dead_payloads == Counter(traffic.bad)  # each bad record exactly once, original bytes
    assert not repeated, repeated
    assert not missing, missing
    assert sorted(map(_pane_key, landed)) == sorted(map(_pane_key, emitted))
    assert report.lost == 0
    assert all(proxy.faults[kind] > 0 for kind in ("http_503", "connection_reset", "row_backend_errors"))
    assert proxy.faults["stored_then_http_500"] + proxy.faults["stored_then_connection_reset"] > 0
    assert proxy.ids_stored_more_than_once > 0  # the lost answers really were retried into BigQuery
