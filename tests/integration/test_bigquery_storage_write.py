"""The Storage Write API sink against the BigQuery emulator's gRPC port: exactly-once under a retried bundle,
at-least-once mode, transient errors, replaced streams, the JSON column and oversized rows.

Pipelines run for real; a fault injection point (transforms/faults.py, armed by fault_points.py) makes one bundle fail
once right after BigQuery stored its rows, and the runner retries it. ``StorageWriter`` -- what the sink's DoFn drives
-- is also called directly where a pipeline would hide what is checked (an offset answered ALREADY_EXISTS, a stream that
disappeared). The transient-error test puts a real gap in front of the emulator: for the first seconds nothing
listens on the sink's port.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator

import apache_beam as beam
import orjson
import pytest
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from pipelines.summary import final_panes
from schemas import AGGREGATES_TABLE, DEAD_LETTER_TABLE
from services import BigQueryEmulator
from services._process import LOCALHOST, free_port
from tests.integration import fault_points as faults
from tests.integration.test_bigquery_sink import (
    SOURCE,
    STORAGE_WRITE_API,
    STREAM,
    Dataset,
    _aggregates,
    _dead_letters,
    _select,
    _without,
    bigquery_run,
    local_network_only,
)
from transforms.io import bigquery_storage
from transforms.io.bigquery import WriteToBigQueryTable
from transforms.io.bigquery_storage import FAULT_AFTER_APPEND, StorageWriter, StorageWriteUnavailable

pytestmark = pytest.mark.integration


def _panes(rows: list[dict]) -> Counter:
    """How often each pane (window, event_type, key, pane_index) was stored: exactly-once means 1 each."""
    return Counter((r["window_start"], r["window_end"], r["event_type"], r["key"], r["pane_index"]) for r in rows)


def _writer(ds: Dataset, table: str, exactly_once: bool = True, endpoint: str | None = None) -> StorageWriter:
    kind = AGGREGATES_TABLE if table.startswith("aggregates") else DEAD_LETTER_TABLE
    return StorageWriter(ds.project, ds.name, table, kind, endpoint or ds.emulator.grpc_host, exactly_once)


def _aggregate(minute: int, key: str | None = "/home", pane_index: int = 0) -> dict:
    return {
        "window_start": f"2024-01-01T00:{minute:02d}:00Z",
        "window_end": f"2024-01-01T00:{minute + 1:02d}:00Z",
        "event_type": "click",
        "key": key,
        "event_count": minute + 1,
        "value_sum": minute * 1.5,
        "distinct_users": 1,
        "distinct_users_sketch": base64.b64encode(b"\x08\x70\x10\x01").decode(),
        "pane_timing": "ON_TIME",
        "pane_index": pane_index,
        "is_last_pane": True,
        "emitted_at": "2024-01-01T00:02:00.123456Z",
    }


# ---- exactly-once in real pipelines ------------------------------------------------------------------------------


def test_a_bundle_retried_after_bigquery_stored_its_rows_writes_no_row_twice(dataset: Dataset, file_run, tmp_path):
    """Replayed stream on the direct runner; the first append succeeds, then its bundle fails and is retried."""
    reference = file_run(f"--source={STREAM}")
    fault_dir = str(tmp_path / "faults")
    faults.arm(fault_dir, FAULT_AFTER_APPEND)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(faults.FAULTS_DIR_ENV, fault_dir)
        summary = bigquery_run(dataset, f"--source={STREAM}", method=STORAGE_WRITE_API)
    assert not faults.is_armed(fault_dir, FAULT_AFTER_APPEND)  # the fault fired: one bundle failed after BigQuery wrote
    # The retry sent the same requests at the same offsets; BigQuery answered ALREADY_EXISTS for the stored ones.
    assert summary.counters["bigquery_rows_already_written"] > 0

    aggregates = _aggregates(dataset.client, dataset.table("aggregates"))
    assert len(aggregates) == summary.counters["aggregate_rows"]  # every pane once
    assert set(_panes(aggregates).values()) == {1}
    view = _aggregates(dataset.client, dataset.table("aggregates_final"))
    ignore = ("emitted_at", "pane_index", "pane_timing", "is_last_pane")
    assert _without(view, *ignore) == _without(list(final_panes(reference.aggregate_rows).values()), *ignore)
    dead = _dead_letters(dataset.client, dataset.table("dead_letter"))
    assert _without(dead, "failed_at") == _without(reference.dead_letter_rows, "failed_at")
    # Appended by committed bundles, plus what the failed attempt stored and its retry found there: all of it, once.
    already = summary.counters["bigquery_rows_already_written"]
    assert summary.counters["bigquery_rows_appended"] + already == len(aggregates) + len(dead)


def test_refused_rows_and_a_retried_bundle_still_give_each_row_one_outcome(bare_dataset: Dataset, file_run, tmp_path):
    """Null keys refused by the table (rows held back in state, sent by a later bundle) plus a retried bundle."""
    ds = bare_dataset
    ds.create_table_with("aggregates", key="REQUIRED")
    ds.create_table_with("dead_letter")
    argv = (f"--source={STREAM}", "--key_field=properties.country")
    reference = file_run(*argv)
    fault_dir = str(tmp_path / "faults")
    faults.arm(fault_dir, FAULT_AFTER_APPEND)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(faults.FAULTS_DIR_ENV, fault_dir)
        summary = bigquery_run(ds, *argv, method=STORAGE_WRITE_API)
    assert not faults.is_armed(fault_dir, FAULT_AFTER_APPEND)

    aggregates = _aggregates(ds.client, ds.table("aggregates"))
    dead = _dead_letters(ds.client, ds.table("dead_letter"))
    refused = [r for r in dead if r["stage"] == "write"]
    assert refused and aggregates
    assert set(_panes(aggregates).values()) == {1}
    assert all(r["key"] is not None for r in aggregates)
    # Every emitted pane has exactly one outcome: stored, or refused as a dead letter.
    refused_rows = [orjson.loads(base64.b64decode(r["payload"])) for r in refused]
    assert len(aggregates) + len(refused_rows) == summary.counters["aggregate_rows"]
    assert all(r["key"] is None for r in refused_rows) and set(_panes(refused_rows).values()) == {1}
    assert not set(_panes(refused_rows)) & set(_panes(aggregates))
    assert summary.counters["bigquery_rows_rejected"] == len(refused)
    assert _without([r for r in dead if r["stage"] != "write"], "failed_at") == _without(
        reference.dead_letter_rows, "failed_at"
    )


def test_at_least_once_mode_writes_through_the_default_stream(bare_dataset: Dataset):
    """What runners without stable retries (Flink) get: the _default stream, refused rows still dead-lettered."""
    ds = bare_dataset
    ds.create_table_with("aggregates", key="REQUIRED")
    rows = [_aggregate(m, key=None if m % 3 == 0 else f"/p{m}") for m in range(12)]
    sink = WriteToBigQueryTable(
        ds.uri("aggregates"),
        AGGREGATES_TABLE,
        STORAGE_WRITE_API,
        endpoint=ds.emulator.endpoint,
        storage_endpoint=ds.emulator.grpc_host,
        exactly_once=False,
    )
    message = "BigQuery refused the row: FIELDS_ERROR: Missing required field: key."
    expected_refused = [(r["window_start"], message) for r in rows if r["key"] is None]
    with local_network_only() as attempts, beam.Pipeline(runner=FnApiRunner()) as pipeline:
        dead = pipeline | beam.Create(rows) | sink
        refused = dead | beam.Map(
            lambda d: (orjson.loads(base64.b64decode(d["payload"]))["window_start"], d["error_message"])
        )
        assert_that(refused, equal_to(expected_refused))
    assert attempts == []
    stored = _aggregates(ds.client, ds.table("aggregates"))
    assert _without(stored) == _without([r for r in rows if r["key"] is not None])


# ---- transient errors --------------------------------------------------------------------------------------------


class _LateProxy:
    """127.0.0.1:``port`` forwards to ``target`` once ``open_in(seconds)`` has elapsed: before, connections are
    refused (gRPC UNAVAILABLE), as when BigQuery's front end is briefly unreachable."""

    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self.port = free_port()
        self._stop = threading.Event()
        self._server: socket.socket | None = None

    def open_in(self, seconds: float) -> None:
        timer = threading.Timer(seconds, self._open)
        timer.daemon = True
        timer.start()

    @property
    def address(self) -> str:
        return f"{LOCALHOST}:{self.port}"

    def _open(self) -> None:
        if self._stop.is_set():
            return
        server = socket.create_server((LOCALHOST, self.port))
        server.settimeout(0.2)
        self._server = server
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        assert self._server is not None
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:  # closed by close()
                return
            upstream = socket.create_connection(self._target)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.close()


@pytest.fixture
def late_proxy(bigquery_emulator: BigQueryEmulator) -> Iterator[_LateProxy]:
    proxy = _LateProxy(bigquery_emulator.grpc_host)
    yield proxy
    proxy.close()


def test_transient_errors_are_retried_with_backoff_and_no_row_is_lost(dataset: Dataset, file_run, late_proxy):
    reference = file_run(f"--source={SOURCE}")
    started = time.monotonic()
    late_proxy.open_in(3.0)  # until then nothing listens on the sink's Storage API address
    with local_network_only() as attempts:
        from pipelines.streaming_analytics import run

        summary = run(
            [
                f"--source={SOURCE}",
                f"--sink={dataset.uri('aggregates')}",
                f"--dead_letter_sink={dataset.uri('dead_letter')}",
                f"--bigquery_endpoint={dataset.emulator.endpoint}",
                f"--bigquery_write_method={STORAGE_WRITE_API}",
                f"--bigquery_storage_endpoint={late_proxy.address}",
            ]
        )
    assert attempts == []
    assert time.monotonic() - started >= 3.0
    assert summary.counters["bigquery_append_retries"] > 0
    aggregates = _aggregates(dataset.client, dataset.table("aggregates"))
    assert _without(aggregates, "emitted_at") == _without(reference.aggregate_rows, "emitted_at")
    dead = _dead_letters(dataset.client, dataset.table("dead_letter"))
    assert _without(dead, "failed_at") == _without(reference.dead_letter_rows, "failed_at")


def test_retries_are_bounded_then_the_bundle_fails(dataset: Dataset, monkeypatch):
    # Shorter delays than production (0.5 s doubling to 16 s) keep the test quick; the attempt count is the same.
    monkeypatch.setattr(bigquery_storage, "RETRY_INITIAL_S", 0.05)
    monkeypatch.setattr(bigquery_storage, "RETRY_MAX_DELAY_S", 0.2)
    writer = _writer(dataset, "aggregates", endpoint=f"{LOCALHOST}:{free_port()}")  # nothing listens there
    try:
        attempts = bigquery_storage.RETRY_ATTEMPTS
        with pytest.raises(StorageWriteUnavailable, match=f"after {attempts} attempts: UNAVAILABLE"):
            writer.write([_aggregate(1)])
    finally:
        writer.close()
    assert _select(dataset.client, dataset.table("aggregates")) == []


# ---- the writer itself ---------------------------------------------------------------------------------------------


def test_an_offset_already_written_is_answered_already_exists_and_not_stored_again(dataset: Dataset):
    writer = _writer(dataset, "aggregates")
    rows = [_aggregate(m) for m in range(5)]
    try:
        first = writer.write(rows)  # a new stream is saved before anything is appended to it
        assert first.stream and first.leftover == rows and first.appended == 0
        stored = writer.write(first.leftover, first.stream, first.offset)
        assert (stored.appended, stored.already_written, stored.offset) == (5, 0, 5)
        # A retried bundle starts again from the state before it: same rows, same stream, same offset.
        again = writer.write(first.leftover, first.stream, first.offset)
        assert (again.appended, again.already_written, again.offset) == (0, 5, 5)
        more = writer.write([_aggregate(7)], stored.stream, stored.offset)
        assert (more.appended, more.offset) == (1, 6)
    finally:
        writer.close()
    assert _without(_aggregates(dataset.client, dataset.table("aggregates"))) == _without([*rows, _aggregate(7)])


def test_a_stream_that_disappeared_or_is_behind_the_state_is_replaced(dataset: Dataset):
    writer = _writer(dataset, "aggregates")
    gone = f"{writer.table}/streams/0123456789abcdef"  # e.g. expired, or held by an emulator that restarted
    try:
        result = writer.write([_aggregate(1), _aggregate(2)], gone, 42)
        assert result.stream not in (None, gone) and result.offset == 0 and len(result.leftover) == 2
        stored = writer.write(result.leftover, result.stream, result.offset)
        assert stored.appended == 2
        # An offset beyond the stream's end (OUT_OF_RANGE): the rows are not at fault, a new stream takes them.
        behind = writer.write([_aggregate(3)], stored.stream, stored.offset + 40)
        assert behind.stream not in (None, stored.stream) and behind.refused == [] and len(behind.leftover) == 1
        assert writer.write(behind.leftover, behind.stream, behind.offset).appended == 1
    finally:
        writer.close()
    assert len(_select(dataset.client, dataset.table("aggregates"))) == 3


def test_json_column_and_oversized_rows(dataset: Dataset):
    metadata = {"topic": "events", "partition": 3, "offset": 12, "key": "ключ 🔑", "attributes": {"a": [1, None]}}
    small = {
        "error_code": "malformed_json",
        "error_field": None,
        "error_message": "payload is not JSON",
        "payload": base64.b64encode(b"\x00\xff{").decode(),
        "source": "kafka://127.0.0.1:9092/events",
        "source_metadata": metadata,
        "stage": "parse",
        "failed_at": "2024-01-01T00:00:00.000001Z",
    }
    big = {**small, "payload": base64.b64encode(b"x" * (11 * 1024 * 1024)).decode()}  # over the 10 MB request limit
    writer = _writer(dataset, "dead_letter", exactly_once=False)
    try:
        result = writer.write([small, big, small])
    finally:
        writer.close()
    assert result.appended == 2 and [row for row, _ in result.refused] == [big]
    assert "one AppendRows request holds at most 10485760 bytes" in result.refused[0][1][0]["message"]
    stored = _select(dataset.client, dataset.table("dead_letter"))
    assert [row["source_metadata"] for row in stored] == [metadata, metadata]  # JSON, not a string
    assert [row["payload"] for row in stored] == [b"\x00\xff{", b"\x00\xff{"]
