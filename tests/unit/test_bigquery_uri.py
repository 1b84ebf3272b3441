"""BigQuery sink configuration without a server: URIs and names, write methods, the endpoint switch, the options
and CLI checks, the picklable emulator client, and the rows and dead letters the sink builds."""

from __future__ import annotations

import base64
import pickle

import apache_beam as beam
import orjson
import pytest
from apache_beam.internal import pickler

from pipelines.graph import build_pipeline
from pipelines.options import ConfigError
from pipelines.release import provision
from pipelines.spec import resolve
from pipelines.streaming_analytics import main
from schemas import AGGREGATES_TABLE, DEAD_LETTER_TABLE
from transforms.io import BigQuerySettings, SinkSettings, UnsupportedUri, WriteRows, check_sink
from transforms.io.bigquery import (
    EMULATOR_HOST_ENV,
    STORAGE_EMULATOR_HOST_ENV,
    EmulatorBigQueryClient,
    TableRef,
    WriteToBigQueryTable,
    check_write_method,
    json_columns,
    normalize_endpoint,
    normalize_storage_endpoint,
    parse_bigquery_uri,
    parse_dataset_id,
    rejected_row_dead_letter,
    resolve_endpoint,
    resolve_storage_endpoint,
    to_insert_row,
)

AGG_URI = "bigquery://my-project.analytics.aggregates"
DLQ_URI = "bigquery://my-project.analytics.dead_letter"


@pytest.fixture(autouse=True)
def no_emulator_env(monkeypatch):
    monkeypatch.delenv(EMULATOR_HOST_ENV, raising=False)
    monkeypatch.delenv(STORAGE_EMULATOR_HOST_ENV, raising=False)


# ---- URIs and names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (AGG_URI, TableRef("my-project", "analytics", "aggregates")),
        ("BigQuery://my-project.analytics.aggregates", TableRef("my-project", "analytics", "aggregates")),
        ("bigquery://local-project.ds.dead_letter", TableRef("local-project", "ds", "dead_letter")),
        ("bigquery://example.com:my-project.ds.t", TableRef("example.com:my-project", "ds", "t")),
        (
            "bigquery://my-project.Data_Set_1.Tabelle-Aggregate",
            TableRef("my-project", "Data_Set_1", "Tabelle-Aggregate"),
        ),
        ("bigquery://my-project.ds.événements_ñ", TableRef("my-project", "ds", "événements_ñ")),
        ("bigquery://my-project.ds.2024 daily", TableRef("my-project", "ds", "2024 daily")),
        ("bigquery://abcdef.d.t", TableRef("abcdef", "d", "t")),  # 6 characters: the shortest project id
        (f"bigquery://{'a' * 30}.d.t", TableRef("a" * 30, "d", "t")),
    ],
)
def test_valid_uris(uri, expected):
    ref = parse_bigquery_uri(uri)
    assert ref == expected
    assert ref.table_id == ".".join(expected)
    assert ref.uri == f"bigquery://{ref.table_id}"
    check_sink(uri)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("bigquery://", "PROJECT.DATASET.TABLE"),
        ("bigquery://my-project", "PROJECT.DATASET.TABLE"),
        ("bigquery://my-project.analytics", "PROJECT.DATASET.TABLE"),
        ("bigquery://my-project..aggregates", "PROJECT.DATASET.TABLE"),
        ("bigquery://my-project.analytics.", "PROJECT.DATASET.TABLE"),
        ("bigquery://.analytics.aggregates", "PROJECT.DATASET.TABLE"),
        ("bigquery://My-Project.analytics.aggregates", "project id 'My-Project'"),
        ("bigquery://proj.analytics.aggregates", "project id 'proj'"),  # too short
        (f"bigquery://{'a' * 31}.d.t", "project id"),  # too long
        ("bigquery://1project.analytics.aggregates", "project id"),
        ("bigquery://my-project-.analytics.aggregates", "project id"),
        ("bigquery://my_project.analytics.aggregates", "project id"),
        ("bigquery://my-project:analytics.aggregates", "not the legacy PROJECT:DATASET.TABLE"),
        ("bigquery://my-project.my-dataset.aggregates", "dataset name 'my-dataset'"),
        ("bigquery://my-project.my dataset.aggregates", "dataset name"),
        (f"bigquery://my-project.{'d' * 1025}.t", "dataset name"),
        ("bigquery://my-project.analytics.aggregates$20240101", "partition decorators"),
        ("bigquery://my-project.analytics.aggregates_*", "wildcards"),
        ("bigquery://my-project.analytics.aggregates/x", "paths are not supported"),
        ("bigquery://my-project.analytics.aggregates?method=x", "query parameters are not supported"),
        ("bigquery://my-project.analytics.aggregates#x", "fragments are not supported"),
        ("bigquery://my-project.analytics.aggr@gates", "table name 'aggr@gates' is invalid (not allowed: '@')"),
        ("bigquery://my-project.analytics. aggregates", "table name"),  # leading space
        (f"bigquery://my-project.analytics.{'é' * 513}", "table name"),  # 1026 bytes
        ("bigquery:my-project.analytics.aggregates", "not a bigquery:// URI"),
    ],
)
def test_invalid_uris_name_the_problem(uri, message):
    with pytest.raises(ValueError) as raised:
        parse_bigquery_uri(uri)
    assert message in str(raised.value)
    with pytest.raises(UnsupportedUri) as unsupported:
        check_sink(uri)
    assert str(unsupported.value) == str(raised.value)


def test_longest_names_are_accepted():
    ref = parse_bigquery_uri(f"bigquery://my-project.{'d' * 1024}.{'t' * 1024}")
    assert (len(ref.dataset), len(ref.table)) == (1024, 1024)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my-project.analytics", ("my-project", "analytics")),
        ("example.com:my-project.d", ("example.com:my-project", "d")),
    ],
)
def test_dataset_ids(text, expected):
    assert parse_dataset_id(text) == expected


@pytest.mark.parametrize("text", ["analytics", ".analytics", "my-project.", "my-project.my-ds", "P.ds"])
def test_bad_dataset_ids(text):
    with pytest.raises(ValueError):
        parse_dataset_id(text)


# ---- write methods -----------------------------------------------------------------------------------


def test_streaming_inserts_and_the_storage_write_api_are_the_supported_methods():
    assert check_write_method("STREAMING_INSERTS") == "STREAMING_INSERTS"
    assert check_write_method(" streaming_inserts ") == "STREAMING_INSERTS"
    assert check_write_method("storage_write_api") == "STORAGE_WRITE_API"


@pytest.mark.parametrize(
    ("method", "words"), [("FILE_LOADS", "not supported"), ("FASTEST", "unknown"), ("", "unknown")]
)
def test_other_methods_are_refused(method, words):
    with pytest.raises(ValueError, match=words):
        check_write_method(method)


# ---- endpoint switch -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("http://127.0.0.1:19050", "http://127.0.0.1:19050"),
        ("http://127.0.0.1:19050/", "http://127.0.0.1:19050"),
        ("127.0.0.1:9050", "http://127.0.0.1:9050"),
        ("https://bq-emulator.internal:443", "https://bq-emulator.internal:443"),
        ("localhost", "http://localhost"),
    ],
)
def test_endpoints(value, expected):
    assert normalize_endpoint(value) == expected


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("ftp://127.0.0.1:9050", "http(s)://HOST"),
        ("http://127.0.0.1:9050/bigquery/v2", "http(s)://HOST"),
        ("http://127.0.0.1:99999", "bad port"),
        ("http://127.0.0.1:9050?x=1", "without query"),
        ("https://bigquery.googleapis.com", "Google's own endpoint"),
        ("http://", "http(s)://HOST"),
    ],
)
def test_bad_endpoints(value, words):
    with pytest.raises(ValueError) as raised:
        normalize_endpoint(value)
    assert words in str(raised.value)


def test_endpoint_comes_from_the_option_then_the_environment_then_google(monkeypatch):
    assert resolve_endpoint(None) is None  # production: Beam's own clients, the job's credentials
    assert resolve_endpoint("") is None
    monkeypatch.setenv(EMULATOR_HOST_ENV, "http://127.0.0.1:19050")
    assert resolve_endpoint(None) == "http://127.0.0.1:19050"
    assert resolve_endpoint("http://10.0.0.7:9050") == "http://10.0.0.7:9050"
    monkeypatch.setenv(EMULATOR_HOST_ENV, "ftp://nope")
    with pytest.raises(ValueError, match=EMULATOR_HOST_ENV):
        resolve_endpoint(None)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("http://127.0.0.1:19060", "HOST:PORT"),
        ("127.0.0.1", "HOST:PORT"),
        ("127.0.0.1:70000", "HOST:PORT"),
        ("bigquerystorage.googleapis.com:443", "Google's own endpoint"),
    ],
)
def test_bad_storage_endpoints(value, words):
    with pytest.raises(ValueError) as raised:
        normalize_storage_endpoint(value)
    assert words in str(raised.value)


def test_storage_endpoint_comes_from_the_option_then_the_environment_then_google(monkeypatch):
    assert normalize_storage_endpoint(" [::1]:19060 ") == "[::1]:19060"
    assert resolve_storage_endpoint(None, None) is None  # production: Google's endpoint, the job's credentials
    monkeypatch.setenv(STORAGE_EMULATOR_HOST_ENV, "127.0.0.1:19060")
    assert resolve_storage_endpoint(None, "http://127.0.0.1:19050") == "127.0.0.1:19060"
    assert resolve_storage_endpoint("localhost:9060", None) == "localhost:9060"
    monkeypatch.delenv(STORAGE_EMULATOR_HOST_ENV)
    # A REST emulator with Google's Storage API would split one sink between two services.
    with pytest.raises(ValueError, match="--bigquery_storage_endpoint: STORAGE_WRITE_API with a BigQuery emulator"):
        resolve_storage_endpoint(None, "http://127.0.0.1:19050")


def test_emulator_client_pickles_as_endpoint_and_project():
    client = EmulatorBigQueryClient("local-project", "http://127.0.0.1:19050")
    for dumps, loads in ((pickle.dumps, pickle.loads), (pickler.dumps, pickler.loads)):
        copy = loads(dumps(client))
        assert isinstance(copy, EmulatorBigQueryClient)
        assert (copy.project, copy.emulator_endpoint) == ("local-project", "http://127.0.0.1:19050")
        assert copy._connection.API_BASE_URL == "http://127.0.0.1:19050"
        assert type(copy._credentials).__name__ == "AnonymousCredentials"
    # No apitools services: Beam's fixed-URL client is never what this object stands in for.
    assert not hasattr(client, "tables") and not hasattr(client, "jobs")


def test_sink_uses_beams_default_clients_without_an_endpoint():
    sink = WriteToBigQueryTable(AGG_URI, AGGREGATES_TABLE)
    assert sink.endpoint is None
    assert sink.table == TableRef("my-project", "analytics", "aggregates")


def test_sink_arguments_are_checked_at_construction():
    with pytest.raises(ValueError, match="table_kind"):
        WriteToBigQueryTable(AGG_URI, "events")
    with pytest.raises(ValueError, match="table_kind"):
        WriteRows(SinkSettings(AGG_URI))  # a BigQuery sink must know which schema it writes
    with pytest.raises(ValueError, match="FILE_LOADS is not supported"):
        WriteToBigQueryTable(AGG_URI, AGGREGATES_TABLE, "FILE_LOADS")
    storage = WriteToBigQueryTable(AGG_URI, AGGREGATES_TABLE, "STORAGE_WRITE_API")
    assert storage.storage_endpoint is None  # Google's, with the job's credentials
    with pytest.raises(ValueError, match="FILE_LOADS is not supported"):
        WriteRows(SinkSettings(AGG_URI, AGGREGATES_TABLE, bigquery=BigQuerySettings("FILE_LOADS")))


def test_a_sink_returns_the_rows_it_refused_by_name():
    pipeline = beam.Pipeline()  # built, not run: nothing is written or contacted
    rows = pipeline | beam.Create([{"window_start": "x"}])
    bigquery = rows | "BigQuery" >> WriteRows(SinkSettings(AGG_URI, AGGREGATES_TABLE))
    files = rows | "Files" >> WriteRows(SinkSettings("/nonexistent-dir-for-tests/agg"))
    assert isinstance(bigquery.failed_rows, beam.PCollection)
    assert files.failed_rows is None  # files, Pub/Sub and Kafka cannot refuse a row


# ---- options and CLI -----------------------------------------------------------------------------------------

SOURCE = "--source=synthetic://?events=10"


def _bigquery(argv: list[str]) -> BigQuerySettings:
    settings = resolve(argv).sink.bigquery
    assert settings is not None
    return settings


def test_options_accept_bigquery_sinks(monkeypatch):
    argv = [SOURCE, f"--sink={AGG_URI}", f"--dead_letter_sink={DLQ_URI}"]
    spec = resolve(argv)
    expected = BigQuerySettings("STREAMING_INSERTS", None, None, True)
    assert spec.sink.bigquery == spec.dead_letter_sink.bigquery == expected
    assert (spec.sink.table_kind, spec.dead_letter_sink.table_kind) == (AGGREGATES_TABLE, DEAD_LETTER_TABLE)
    monkeypatch.setenv(EMULATOR_HOST_ENV, "127.0.0.1:19050")
    assert _bigquery(argv).endpoint == "http://127.0.0.1:19050"
    explicit = [SOURCE, f"--sink={AGG_URI}", "--bigquery_endpoint=http://127.0.0.1:9999"]
    assert _bigquery(explicit).endpoint == "http://127.0.0.1:9999"


def test_storage_write_options_and_delivery_per_runner(monkeypatch):
    storage = [SOURCE, f"--sink={AGG_URI}", "--bigquery_write_method=STORAGE_WRITE_API"]
    settings = _bigquery(storage)
    assert (settings.write_method, settings.storage_endpoint) == ("STORAGE_WRITE_API", None)
    emulator = [*storage, "--bigquery_endpoint=http://127.0.0.1:19050", "--bigquery_storage_endpoint=127.0.0.1:19060"]
    assert _bigquery(emulator).storage_endpoint == "127.0.0.1:19060"
    monkeypatch.setenv(STORAGE_EMULATOR_HOST_ENV, "127.0.0.1:29060")
    assert _bigquery(storage).storage_endpoint == "127.0.0.1:29060"
    # Exactly-once where a failed bundle is retried with the same input (or fails the job); at-least-once elsewhere.
    for runner, exactly_once in [
        (None, True),
        ("DirectRunner", True),
        ("PrismRunner", True),
        ("DataflowRunner", True),
        ("FlinkRunner", False),
        ("PortableRunner", False),
    ]:
        argv = [*storage, f"--runner={runner}"] if runner else storage
        assert _bigquery(argv).exactly_once is exactly_once, runner


def test_endpoint_is_ignored_without_a_bigquery_sink(monkeypatch):
    monkeypatch.setenv(EMULATOR_HOST_ENV, "ftp://not-used")
    spec = resolve([SOURCE, "--sink=/nonexistent-dir-for-tests/agg"])
    assert spec.sink.bigquery is None and spec.dead_letter_sink.bigquery is None


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([f"--sink={AGG_URI}", "--bigquery_write_method=FILE_LOADS"], "--bigquery_write_method"),
        (
            [f"--sink={AGG_URI}", "--bigquery_write_method=STORAGE_WRITE_API", "--bigquery_endpoint=127.0.0.1:19050"],
            "--bigquery_storage_endpoint",
        ),
        (
            [f"--sink={AGG_URI}", "--bigquery_write_method=STORAGE_WRITE_API", "--bigquery_storage_endpoint=h"],
            "--bigquery_storage_endpoint",
        ),
        ([f"--sink={AGG_URI}", "--bigquery_endpoint=https://bigquery.googleapis.com"], "--bigquery_endpoint"),
        ([f"--sink={AGG_URI}", "--bigquery_endpoint=http://h:1/path"], "--bigquery_endpoint"),
        (["--sink=bigquery://my-project.analytics"], "--sink"),
        (["--dead_letter_sink=bigquery://my-project.my-ds.t"], "--dead_letter_sink"),
    ],
)
def test_cli_refuses_bad_bigquery_options_with_one_line(argv, words, capsys):
    defaults = ["--sink=/nonexistent-dir-for-tests/agg", "--dead_letter_sink=/nonexistent-dir-for-tests/dlq"]
    given = {a.split("=")[0] for a in argv}
    assert main([SOURCE, *argv, *(d for d in defaults if d.split("=")[0] not in given)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("error: ") and words in err[0], err
    assert len(err) == 2 and err[1].startswith("usage: ")


def test_file_loads_error_says_why(capsys):
    assert main([SOURCE, f"--sink={AGG_URI}", "--bigquery_write_method=FILE_LOADS"]) == 2
    line = capsys.readouterr().err.splitlines()[0]
    assert "FILE_LOADS is not supported" in line and "GCS" in line


def test_config_error_for_bad_write_method():
    with pytest.raises(ConfigError, match="--bigquery_write_method: unknown BigQuery write method 'FAST'"):
        resolve([SOURCE, "--bigquery_write_method=FAST"])


def test_graph_routes_refused_rows_to_the_dead_letter_sink():
    """Built, not run: production clients are only created on workers, so nothing is contacted here."""
    spec = resolve(["--source=synthetic://?events=10", f"--sink={AGG_URI}", f"--dead_letter_sink={DLQ_URI}"])
    pipeline = beam.Pipeline()
    build_pipeline(pipeline, spec)
    labels = {t.full_label for t in pipeline.transforms_stack[0].parts}
    assert {"WriteAggregates", "WithRefusedAggregates", "WriteDeadLetters", "LogLostDeadLetters"} <= labels

    files = resolve(["--source=synthetic://?events=10", "--sink=/nonexistent/a", "--dead_letter_sink=/nonexistent/d"])
    pipeline = beam.Pipeline()
    build_pipeline(pipeline, files)
    labels = {t.full_label for t in pipeline.transforms_stack[0].parts}
    assert "WithRefusedAggregates" not in labels and "LogLostDeadLetters" not in labels


# ---- rows ---------------------------------------------------------------------------------------------------


def test_json_column_is_sent_as_json_text():
    assert json_columns(DEAD_LETTER_TABLE) == ("source_metadata",)
    assert json_columns(AGGREGATES_TABLE) == ()
    row = {"error_code": "x", "source_metadata": {"sequence": 3, "attributes": {"a": "é"}}}
    sent = to_insert_row(row, json_columns(DEAD_LETTER_TABLE))
    assert orjson.loads(sent["source_metadata"]) == row["source_metadata"]
    assert isinstance(row["source_metadata"], dict)  # the input is not modified
    assert to_insert_row({"source_metadata": None}, ("source_metadata",)) == {"source_metadata": None}
    aggregate = {"window_start": "2024-01-01T00:00:00Z", "event_count": 3}
    assert to_insert_row(aggregate, ()) is aggregate


def test_refused_row_becomes_a_write_dead_letter():
    row = {"window_start": "2024-01-01T00:00:00Z", "key": None, "event_count": 3}
    errors = [{"reason": "invalid", "location": "key", "message": "Missing required field: key.", "debugInfo": ""}]
    dead = rejected_row_dead_letter("my-project:analytics.aggregates", row, errors, AGG_URI)
    assert dead["stage"] == "write" and dead["error_code"] == "write_rejected"
    assert dead["error_field"] == "key"
    assert "Missing required field: key." in dead["error_message"]
    assert orjson.loads(base64.b64decode(dead["payload"])) == row
    assert dead["source"] == AGG_URI
    assert dead["source_metadata"] == {
        "table": "my-project.analytics.aggregates",  # one spelling, whatever Beam's legacy form was
        "errors": [{"reason": "invalid", "location": "key", "message": "Missing required field: key."}],
    }
    # The Storage Write path names the table the same way; domain-scoped projects keep their colon.
    storage = rejected_row_dead_letter("my-project.analytics.aggregates", row, errors, AGG_URI)
    assert storage["source_metadata"]["table"] == "my-project.analytics.aggregates"
    scoped = rejected_row_dead_letter("example.com:my-project:ds.t", row, errors, AGG_URI)
    assert scoped["source_metadata"]["table"] == "example.com:my-project.ds.t"
    assert rejected_row_dead_letter("example.com:p.ds.t", row, errors, AGG_URI)["source_metadata"]["table"] == (
        "example.com:p.ds.t"
    )
    assert dead["failed_at"].endswith("Z")
    # Beam refuses oversized rows itself and passes a plain string.
    too_big = rejected_row_dead_letter("p:d.t", row, "Received row with size 11MB that exceeds ...", AGG_URI)
    assert too_big["error_field"] is None and "exceeds" in too_big["error_message"]


# ---- provisioning arguments (no server needed: they fail before any client exists) ------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        ([], "--dataset"),
        (["--dataset=analytics"], "PROJECT.DATASET"),
        (["--dataset=my-project.my-ds"], "dataset name"),
        (["--dataset=my-project.ds", "--aggregates_table=a$b"], "partition decorators"),
        (["--dataset=my-project.ds", "--dead_letter_table=x/y"], "table name"),
        (["--dataset=my-project.ds", "--aggregates_table=t", "--dead_letter_table=t"], "both 't'"),
        (["--dataset=my-project.ds", "--endpoint=https://bigquery.googleapis.com"], "Google's own endpoint"),
        (["--dataset=my-project.ds", "--colour=red"], "unrecognized arguments"),
    ],
)
def test_provision_bad_arguments_exit_2_with_one_line(argv, words, capsys):
    assert provision.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
