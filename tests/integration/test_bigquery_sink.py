"""BigQuery sink and provisioning against a real BigQuery emulator (local-bigquery), the production code path.

The same pipeline runs once into local JSON-lines files and once into BigQuery tables, with each write method
(STREAMING_INSERTS over REST, STORAGE_WRITE_API over gRPC); what lands in BigQuery is queried back and must equal
the files row for row. Rows a table refuses must come back as dead letters (stage=write, BigQuery's error text);
dead letters the dead-letter table refuses are logged and counted. Every pipeline run here is guarded: any name
lookup other than 127.0.0.1/localhost (googleapis.com, the metadata server) fails the test.
"""

from __future__ import annotations

import base64
import contextlib
import socket
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson
import pytest
from google.cloud import bigquery

from pipelines.release import provision
from pipelines.streaming_analytics import run
from pipelines.summary import RunSummary, final_panes
from schemas import bigquery_field_names
from services import BigQueryEmulator
from transforms.io.bigquery import EMULATOR_HOST_ENV, STORAGE_EMULATOR_HOST_ENV
from transforms.sketch import merge_sketches
from transforms.timefmt import format_rfc3339_us

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# 300 records over 100 minutes of event time (two hours), bad and duplicate records included; batch.
SOURCE = "synthetic://?events=300&rate=0.05&keys=4&users=40&seed=11"
# A replayed stream with late data: EARLY, ON_TIME and LATE panes, too-late records.
STREAM = "synthetic://?mode=replay&events=300&rate=0.5&keys=3&users=50&late=0.1&seed=3"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STREAMING_INSERTS, STORAGE_WRITE_API = "STREAMING_INSERTS", "STORAGE_WRITE_API"
METHODS = (STREAMING_INSERTS, STORAGE_WRITE_API)


# ---- helpers -------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def local_network_only() -> Iterator[list[str]]:
    """Name lookups for anything but the local machine fail (and are recorded): nothing may reach Google."""
    attempts: list[str] = []
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in _LOCAL_HOSTS:
            attempts.append(name)
            raise OSError(f"test guard: no network beyond 127.0.0.1 (tried {name})")
        return real(host, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", guarded)
        yield attempts


def _unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def _rfc3339(value: datetime) -> str:
    return format_rfc3339_us((value - _EPOCH) // timedelta(microseconds=1))


def _select(client: bigquery.Client, table_id: str) -> list[dict[str, Any]]:
    return [dict(row) for row in client.query(f"SELECT * FROM `{table_id}`").result()]


def _aggregate_as_file_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for name in ("window_start", "window_end", "emitted_at"):
        out[name] = _rfc3339(out[name])
    out["distinct_users_sketch"] = base64.b64encode(out["distinct_users_sketch"]).decode("ascii")
    return out


def _dead_letter_as_file_row(row: dict[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["failed_at"] = _rfc3339(out["failed_at"])
    if out["payload"] is not None:
        out["payload"] = base64.b64encode(out["payload"]).decode("ascii")
    return out


def _without(rows: list[dict[str, Any]], *names: str) -> list[dict[str, Any]]:
    """Rows minus run-dependent columns (processing times), in a canonical order, for multiset comparison."""
    trimmed = [{k: v for k, v in row.items() if k not in names} for row in rows]
    return sorted(trimmed, key=lambda r: orjson.dumps(r, option=orjson.OPT_SORT_KEYS))


def _aggregates(client: bigquery.Client, table_id: str) -> list[dict[str, Any]]:
    return [_aggregate_as_file_row(r) for r in _select(client, table_id)]


def _dead_letters(client: bigquery.Client, table_id: str) -> list[dict[str, Any]]:
    return [_dead_letter_as_file_row(r) for r in _select(client, table_id)]


class Dataset:
    """A fresh dataset on the emulator, provisioned by pipelines.release.provision unless told otherwise."""

    def __init__(self, emulator: BigQueryEmulator, provisioned: bool = True) -> None:
        self.emulator = emulator
        self.project = emulator.project
        self.name = _unique("sink")
        self.id = f"{self.project}.{self.name}"
        self.client = emulator.client()
        if provisioned:
            assert provision.main([f"--dataset={self.id}", f"--endpoint={emulator.endpoint}"]) == 0
        else:
            self.client.create_dataset(self.id)

    def uri(self, table: str) -> str:
        return f"bigquery://{self.id}.{table}"

    def table(self, table: str) -> str:
        return f"{self.id}.{table}"

    def create_table_with(self, table: str, **modes: str) -> None:
        """The provisioned schema of ``table`` with some columns' modes changed (a table that refuses rows)."""
        wanted = (provision.aggregates_table if table == "aggregates" else provision.dead_letter_table)(
            self.table(table)
        )
        wanted.schema = [
            bigquery.SchemaField(f.name, f.field_type, mode=modes.get(f.name, f.mode)) for f in wanted.schema
        ]
        self.client.create_table(wanted)

    def drop(self) -> None:
        self.client.delete_dataset(self.id, delete_contents=True, not_found_ok=True)
        self.client.close()


def endpoint_args(emulator: BigQueryEmulator, method: str) -> list[str]:
    """The options that point a ``method`` sink at ``emulator`` (the Storage Write API is gRPC, on its own port)."""
    args = [f"--bigquery_endpoint={emulator.endpoint}"]
    if method == STORAGE_WRITE_API:
        args += [f"--bigquery_write_method={method}", f"--bigquery_storage_endpoint={emulator.grpc_host}"]
    return args


def bigquery_run(
    ds: Dataset,
    *argv: str,
    method: str = STREAMING_INSERTS,
    aggregates: str = "aggregates",
    dead_letter: str = "dead_letter",
):
    """The pipeline into ``ds``'s tables, endpoints given explicitly; no lookups beyond 127.0.0.1 allowed."""
    with local_network_only() as attempts:
        summary = run(
            [
                *argv,
                f"--sink={ds.uri(aggregates)}",
                f"--dead_letter_sink={ds.uri(dead_letter)}",
                *endpoint_args(ds.emulator, method),
            ]
        )
    assert attempts == []
    return summary


@pytest.fixture(scope="module", params=METHODS)
def batch_into_bigquery(request, bigquery_emulator: BigQueryEmulator) -> Iterator[tuple[Dataset, RunSummary]]:
    """SOURCE into provisioned tables, the endpoints taken from the environment variables (no endpoint options)."""
    ds = Dataset(bigquery_emulator)
    with pytest.MonkeyPatch.context() as patch, local_network_only() as attempts:
        patch.setenv(EMULATOR_HOST_ENV, bigquery_emulator.endpoint)
        patch.setenv(STORAGE_EMULATOR_HOST_ENV, bigquery_emulator.grpc_host)
        summary = run(
            [
                f"--source={SOURCE}",
                f"--sink={ds.uri('aggregates')}",
                f"--dead_letter_sink={ds.uri('dead_letter')}",
                f"--bigquery_write_method={request.param}",
            ]
        )
    assert attempts == []
    yield ds, summary
    ds.drop()


# ---- provisioning --------------------------------------------------------------------------------------------


def _statuses(out: str) -> dict[str, str]:
    return {
        line.split()[1]: line.split()[2]
        for line in out.splitlines()
        if line.split()[:1] in (["dataset"], ["table"], ["view"])
    }


def test_provisioning_is_idempotent_and_creates_partitioned_clustered_tables_and_a_final_pane_view(
    bigquery_emulator: BigQueryEmulator, capsys, monkeypatch
):
    project, name = bigquery_emulator.project, _unique("prov")
    ds_id = f"{project}.{name}"
    client = bigquery_emulator.client()
    try:
        with local_network_only() as attempts:
            assert provision.main([f"--dataset={ds_id}", f"--endpoint={bigquery_emulator.endpoint}"]) == 0
            first = capsys.readouterr().out
            # Second run through the environment variable instead of the option: everything is found.
            monkeypatch.setenv(EMULATOR_HOST_ENV, bigquery_emulator.endpoint)
            assert provision.main([f"--dataset={ds_id}"]) == 0
            second = capsys.readouterr().out
        assert attempts == []
        names = [ds_id, f"{ds_id}.aggregates", f"{ds_id}.dead_letter", f"{ds_id}.aggregates_final"]
        assert _statuses(first) == dict.fromkeys(names, "created"), first
        assert _statuses(second) == dict.fromkeys(names, "found"), second
        assert f"--sink=bigquery://{ds_id}.aggregates --dead_letter_sink=bigquery://{ds_id}.dead_letter" in second

        aggregates = client.get_table(f"{ds_id}.aggregates")
        assert [f.name for f in aggregates.schema] == list(bigquery_field_names("aggregates"))
        assert (aggregates.time_partitioning.type_, aggregates.time_partitioning.field) == ("DAY", "window_start")
        assert aggregates.clustering_fields == ["event_type", "key"]
        dead = client.get_table(f"{ds_id}.dead_letter")
        assert [f.name for f in dead.schema] == list(bigquery_field_names("dead_letter"))
        assert [f.field_type for f in dead.schema if f.name == "source_metadata"] == ["JSON"]
        assert (dead.time_partitioning.type_, dead.time_partitioning.field) == ("DAY", "failed_at")
        view = client.get_table(f"{ds_id}.aggregates_final")
        assert view.table_type == "VIEW" and f"`{ds_id}.aggregates`" in view.view_query

        # The view keeps the highest pane of each (window, event_type, key), null keys included.
        def pane(key, index, count, start="2024-01-01T00:00:00Z"):
            return {
                "window_start": start,
                "window_end": "2024-01-01T00:01:00Z",
                "event_type": "click",
                "key": key,
                "event_count": count,
                "value_sum": float(count),
                "distinct_users": 1,
                "distinct_users_sketch": "AA==",
                "pane_timing": "EARLY" if index == 0 else "LATE",
                "pane_index": index,
                "is_last_pane": False,
                "emitted_at": "2024-01-01T00:02:00Z",
            }

        panes = [pane("/a", 0, 1), pane("/a", 2, 5), pane("/a", 1, 3), pane(None, 0, 2), pane(None, 1, 4)]
        panes.append(pane("/a", 0, 7, start="2024-01-01T00:00:30Z"))  # another window (e.g. sliding)
        assert client.insert_rows_json(f"{ds_id}.aggregates", panes) == []
        finals = {
            (r["window_start"].second, r["key"]): (r["pane_index"], r["event_count"])
            for r in _select(client, f"{ds_id}.aggregates_final")
        }
        assert finals == {(0, "/a"): (2, 5), (0, None): (1, 4), (30, "/a"): (0, 7)}

        # A view with another query is put right; a table the sink cannot write to is an error (exit 1).
        view.view_query = f"SELECT * FROM `{ds_id}.aggregates`"
        client.update_table(view, ["view_query"])
        monkeypatch.delenv(EMULATOR_HOST_ENV)
        assert provision.main([f"--dataset={ds_id}", f"--endpoint={bigquery_emulator.endpoint}"]) == 0
        assert _statuses(capsys.readouterr().out)[f"{ds_id}.aggregates_final"] == "updated"
        strict = provision.aggregates_table(f"{ds_id}.strict")
        strict.schema = [bigquery.SchemaField(f.name, f.field_type, mode="REQUIRED") for f in strict.schema]
        client.create_table(strict)
        argv = [f"--dataset={ds_id}", f"--endpoint={bigquery_emulator.endpoint}", "--aggregates_table=strict"]
        assert provision.main(argv) == 1
        err = capsys.readouterr().err
        assert "column key is REQUIRED, the sink may write null" in err and len(err.strip().splitlines()) == 1
    finally:
        client.delete_dataset(ds_id, delete_contents=True, not_found_ok=True)
        client.close()


def test_an_object_a_concurrent_run_created_first_is_found_not_an_error(bigquery_emulator: BigQueryEmulator):
    """Two provisioning runs at once: the one whose create comes second gets 409 and checks the existing object.

    The race itself is not run here: local-bigquery's DuckLake catalog fails concurrent creates with "400 Failed to
    commit DuckLake transaction" instead of BigQuery's 409, so the create-after-lookup step is called directly."""
    project, name = bigquery_emulator.project, _unique("race")
    client = bigquery_emulator.client()
    try:
        with local_network_only() as attempts:
            assert provision.create_or_get_dataset(client, bigquery.Dataset(f"{project}.{name}")) is None
            assert provision.create_or_get_dataset(client, bigquery.Dataset(f"{project}.{name}")).dataset_id == name
            wanted = provision.aggregates_table(f"{project}.{name}.aggregates")
            assert provision.create_or_get_table(client, wanted) is None
            assert provision.create_or_get_table(client, wanted).clustering_fields == ["event_type", "key"]
        assert attempts == []
    finally:
        client.delete_dataset(f"{project}.{name}", delete_contents=True, not_found_ok=True)
        client.close()


# ---- the sink ------------------------------------------------------------------------------------------------


def test_batch_run_lands_exactly_the_rows_of_the_file_sinks(batch_into_bigquery, file_run):
    ds, summary = batch_into_bigquery
    reference = file_run(f"--source={SOURCE}")
    assert reference.aggregate_rows and reference.dead_letter_rows
    assert {r["error_code"] for r in reference.dead_letter_rows} >= {"malformed_json", "invalid_value"}

    aggregates = _aggregates(ds.client, ds.table("aggregates"))
    assert len(aggregates) == summary.counters["aggregate_rows"] == len(reference.aggregate_rows)
    assert _without(aggregates, "emitted_at") == _without(reference.aggregate_rows, "emitted_at")

    dead = _dead_letters(ds.client, ds.table("dead_letter"))
    assert _without(dead, "failed_at") == _without(reference.dead_letter_rows, "failed_at")
    # The JSON column holds the source metadata as JSON (not as a string), payloads are the original bytes.
    assert all(isinstance(row["source_metadata"], dict) and "sequence" in row["source_metadata"] for row in dead)
    assert summary.counters.get("bigquery_rows_rejected", 0) == 0
    assert "dead_letter_write_failures" not in summary.counters
    if "bigquery_streams_created" in summary.counters:  # STORAGE_WRITE_API: every row appended once
        assert summary.counters["bigquery_rows_appended"] == len(aggregates) + len(dead)


def test_final_pane_view_and_hourly_rollup_sql(batch_into_bigquery, file_run):
    ds, _ = batch_into_bigquery
    reference = file_run(f"--source={SOURCE}")
    finals = {_group(r): r for r in _aggregates(ds.client, ds.table("aggregates_final"))}
    assert _without(list(finals.values()), "emitted_at") == _without(
        list(final_panes(reference.aggregate_rows).values()), "emitted_at"
    )

    sql = (ROOT / "schemas" / "rollup_hourly.sql").read_text()
    assert sql.count("HLL_COUNT.MERGE(distinct_users_sketch)") == 1
    assert sql.count("`my-project.analytics.aggregates_final`") == 1
    # The emulator has no HLL_COUNT functions: the sketches of each group come back as an array instead.
    on_emulator = sql.replace("HLL_COUNT.MERGE(distinct_users_sketch)", "ARRAY_AGG(distinct_users_sketch)").replace(
        "my-project.analytics", ds.id
    )
    hour = datetime(2024, 1, 1, tzinfo=timezone.utc)
    job = ds.client.query(
        on_emulator,
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("from_ts", "TIMESTAMP", hour),
                bigquery.ScalarQueryParameter("to_ts", "TIMESTAMP", hour + timedelta(hours=1)),
            ]
        ),
    )
    got = {
        (r["hour_start"], r["event_type"], r["key"]): (
            r["event_count"],
            r["value_sum"],
            merge_sketches(r["distinct_users"]).estimate(),
            r["windows"],
        )
        for r in job.result()
    }

    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in final_panes(reference.aggregate_rows).values():
        if row["window_start"].startswith("2024-01-01T00:"):  # the hour asked for; the data spans two
            groups[(hour, row["event_type"], row["key"])].append(row)
    assert got.keys() == groups.keys()
    for group, rows in groups.items():
        count, value_sum, distinct, windows = got[group]
        assert (count, windows) == (sum(r["event_count"] for r in rows), len(rows))
        assert value_sum == pytest.approx(sum(r["value_sum"] for r in rows), rel=1e-12)
        expected = merge_sketches(base64.b64decode(r["distinct_users_sketch"]) for r in rows).estimate()
        assert distinct == expected
        assert distinct >= max(r["distinct_users"] for r in rows)


def _group(row: dict[str, Any]) -> tuple:
    return (row["window_start"], row["window_end"], row["event_type"], row["key"])


@pytest.mark.parametrize("method", METHODS)
def test_refused_aggregate_rows_become_write_dead_letters(bare_dataset: Dataset, file_run, method):
    ds = bare_dataset
    # A table that refuses null keys; grouping by properties.country leaves most events without one.
    ds.create_table_with("aggregates", key="REQUIRED")
    ds.create_table_with("dead_letter")
    argv = (f"--source={SOURCE}", "--key_field=properties.country")
    reference = file_run(*argv)
    summary = bigquery_run(ds, *argv, method=method)

    refused = [r for r in reference.aggregate_rows if r["key"] is None]
    accepted = [r for r in reference.aggregate_rows if r["key"] is not None]
    assert refused and accepted
    assert _without(_aggregates(ds.client, ds.table("aggregates")), "emitted_at") == _without(accepted, "emitted_at")

    dead = _dead_letters(ds.client, ds.table("dead_letter"))
    written = [r for r in dead if r["stage"] == "write"]
    assert _without([r for r in dead if r["stage"] != "write"], "failed_at") == _without(
        reference.dead_letter_rows, "failed_at"
    )
    assert summary.counters["bigquery_rows_rejected"] == len(written) == len(refused)
    for row in written:
        assert row["error_code"] == "write_rejected"
        assert "Missing required field: key." in row["error_message"]  # BigQuery's own words
        assert row["source"] == ds.uri("aggregates")
        assert row["source_metadata"]["table"] == ds.table("aggregates")
        if method == STREAMING_INSERTS:  # insertAll names the column; AppendRows' row errors have no location
            assert (row["error_field"], row["source_metadata"]["errors"][0]["reason"]) == ("key", "invalid")
        else:
            assert (row["error_field"], row["source_metadata"]["errors"][0]["reason"]) == (None, "FIELDS_ERROR")
    # Each payload is the refused row itself, as JSON.
    payloads = [orjson.loads(base64.b64decode(r["payload"])) for r in written]
    assert _without(payloads, "emitted_at") == _without(refused, "emitted_at")


@pytest.mark.parametrize("method", METHODS)
def test_dead_letters_the_dead_letter_table_refuses_are_logged_and_counted(
    bare_dataset: Dataset, file_run, caplog, method
):
    ds = bare_dataset
    ds.create_table_with("aggregates")
    ds.create_table_with("dead_letter", error_field="REQUIRED")  # parse errors have no field: refused
    argv = (f"--source={SOURCE}",)
    reference = file_run(*argv)
    with caplog.at_level("ERROR", logger="transforms.io.bigquery"):
        summary = bigquery_run(ds, *argv, method=method)

    lost = [r for r in reference.dead_letter_rows if r["error_field"] is None]
    kept = [r for r in reference.dead_letter_rows if r["error_field"] is not None]
    assert lost and kept
    assert summary.counters["dead_letter_write_failures"] == len(lost)
    assert _without(_dead_letters(ds.client, ds.table("dead_letter")), "failed_at") == _without(kept, "failed_at")
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead letter not written")]
    assert len(logged) == len(lost)
    for row in lost:  # each lost dead letter is in the log in full, original payload included
        assert (
            sum(row["payload"] in message and "Missing required field: error_field." in message for message in logged)
            >= 1
        )
    assert len(_aggregates(ds.client, ds.table("aggregates"))) == len(reference.aggregate_rows)


def test_streaming_run_lands_every_pane_including_late_ones(dataset: Dataset, file_run):
    """STREAMING_INSERTS; the same run with STORAGE_WRITE_API, and a bundle failure on top, is
    test_bigquery_storage_write.py::test_a_bundle_retried_after_bigquery_stored_its_rows_writes_no_row_twice."""
    argv = (f"--source={STREAM}",)
    reference = file_run(*argv)
    assert Counter(r["pane_timing"] for r in reference.aggregate_rows)["LATE"] > 0
    summary = bigquery_run(dataset, *argv)

    aggregates = _aggregates(dataset.client, dataset.table("aggregates"))
    assert len(aggregates) == summary.counters["aggregate_rows"]  # every emitted pane landed
    assert Counter(r["pane_timing"] for r in aggregates)["LATE"] > 0
    view = _aggregates(dataset.client, dataset.table("aggregates_final"))
    assert _without(view, "emitted_at", "pane_index", "pane_timing", "is_last_pane") == _without(
        list(final_panes(reference.aggregate_rows).values()), "emitted_at", "pane_index", "pane_timing", "is_last_pane"
    )
    dead = _dead_letters(dataset.client, dataset.table("dead_letter"))
    assert _without(dead, "failed_at") == _without(reference.dead_letter_rows, "failed_at")
