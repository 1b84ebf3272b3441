"""Before a job starts: what can be checked about its source and sinks, each check bounded in time.

- files: the source's path or glob matches at least one file (``gs://`` through Beam's file system, with
  credentials); a local sink's directory can be written;
- Google endpoints (``gs://``, Pub/Sub without ``PUBSUB_EMULATOR_HOST``, BigQuery without an emulator endpoint):
  Application Default Credentials exist;
- Kafka: a bootstrap server answers (connected as the pipeline will: TLS, SASL) and the topic exists;
- Pub/Sub: the subscription or topic exists;
- BigQuery: the table exists and its columns can take the sink's rows.

A problem is one ``ConfigError`` line naming the option and what was tried (exit code 2 on the command line). The
same source check serves the watch on a running streaming job (``pipelines/job.py``).
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Callable, Sequence

from pipelines.kafka_probe import ClientSecurity, topic_problem
from pipelines.options import ConfigError
from pipelines.spec import LaunchSpec
from schemas import bigquery_schema
from transforms.io import FILE_SCHEMES, KAFKA, PUBSUB, SinkSettings, local_file_prefix, scheme_of
from transforms.io.bigquery import SCHEME as BIGQUERY
from transforms.io.bigquery import parse_bigquery_uri
from transforms.io.kafka import parse_kafka_uri
from transforms.io.pubsub import parse_pubsub_uri

_LOG = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 20.0  # per check: the longest a start-up waits on one service
_CALL_TIMEOUT_S = 8.0  # per network call inside a check
PUBSUB_EMULATOR_ENV = "PUBSUB_EMULATOR_HOST"
_NO_CREDENTIALS = (
    "no Google credentials found (Application Default Credentials: GOOGLE_APPLICATION_CREDENTIALS, "
    "`gcloud auth application-default login`, or the service account of a Google Cloud VM)"
)
# Legacy and standard SQL names of the same types.
_TYPE_ALIASES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}


def check_before_start(spec: LaunchSpec, timeout_s: float = CHECK_TIMEOUT_S) -> None:
    """Raises ConfigError (one line: the option, what was tried, what was found) for the first problem."""
    checks: list[tuple[str, Callable[[], str | None]]] = [("source", lambda: source_problem(spec))]
    for name, sink in spec.sinks:
        checks.append((name, lambda sink=sink: sink_problem(sink, spec)))
    for name, check in checks:
        problem = bounded(check, timeout_s)
        if problem:
            raise ConfigError(f"--{name}: {problem}")


def bounded(check: Callable[[], str | None], timeout_s: float) -> str | None:
    """``check()`` in a daemon thread: its answer, or a problem if it takes longer than ``timeout_s``."""
    answer: list[str | None] = []

    def target() -> None:
        try:
            answer.append(check())
        except Exception as exc:  # noqa: BLE001 - any client library error is the problem to report
            answer.append(f"the check failed: {_first_line(exc)}")

    thread = threading.Thread(target=target, name="startup-check", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not answer:
        return f"no answer within {timeout_s:.0f} s"
    return answer[0]


def source_problem(spec: LaunchSpec) -> str | None:
    uri = spec.source.given
    scheme = scheme_of(uri)
    if scheme in FILE_SCHEMES:
        return _files_problem(uri)
    if scheme == PUBSUB:
        return _pubsub_problem(uri)
    if scheme == KAFKA:
        return _kafka_problem(uri, spec)
    return None  # synthetic: generated here


def sink_problem(sink: SinkSettings, spec: LaunchSpec) -> str | None:
    scheme = scheme_of(sink.uri)
    if scheme == BIGQUERY:
        return _bigquery_problem(sink)
    if scheme == PUBSUB:
        return _pubsub_problem(sink.uri)
    if scheme == KAFKA:
        return _kafka_problem(sink.uri, spec)
    path = local_file_prefix(sink.uri)
    return _writable_problem(path) if path is not None else None


# ---- files -------------------------------------------------------------------------------------------------------


def _files_problem(uri: str) -> str | None:
    if scheme_of(uri) == "gs":
        problem = google_credentials_problem()
        if problem:
            return f"{uri} is on Google Cloud Storage: {problem}"
        from apache_beam.io.filesystems import FileSystems

        matched = FileSystems.match([uri])[0].metadata_list
        return None if matched else f"no file matches {uri}"
    path = local_file_prefix(uri) or uri
    if not any(os.path.isfile(match) for match in glob.iglob(path)):
        return f"no file matches {path}"
    return None


def _writable_problem(prefix: str) -> str | None:
    """A local sink writes ``<prefix>-*.jsonl``: its directory must exist or be creatable, and be writable."""
    directory = os.path.dirname(os.path.abspath(prefix))
    existing = directory
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"cannot write files under {directory}: {existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write files under {directory}: {existing} is not writable"
    return None


# ---- Google ------------------------------------------------------------------------------------------------------


def google_credentials_problem() -> str | None:
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    try:
        google.auth.default()
    except DefaultCredentialsError:
        return _NO_CREDENTIALS
    return None


def _pubsub_problem(uri: str) -> str | None:
    from google.api_core import exceptions

    ref = parse_pubsub_uri(uri)
    emulator = os.environ.get(PUBSUB_EMULATOR_ENV, "").strip()
    where = f"the Pub/Sub emulator at {emulator} ({PUBSUB_EMULATOR_ENV})" if emulator else "Google Pub/Sub"
    if not emulator:
        problem = google_credentials_problem()
        if problem:
            return f"{uri} is on Google Pub/Sub: {problem}, and {PUBSUB_EMULATOR_ENV} (an emulator) is not set"
    from google.cloud import pubsub_v1

    what = "topic" if ref.is_topic else "subscription"
    try:
        if ref.is_topic:
            with pubsub_v1.PublisherClient() as client:  # noqa: SIM117 - a context manager closes the channel
                client.get_topic(request={"topic": ref.path}, retry=None, timeout=_CALL_TIMEOUT_S)
        else:
            with pubsub_v1.SubscriberClient() as client:
                client.get_subscription(request={"subscription": ref.path}, retry=None, timeout=_CALL_TIMEOUT_S)
    except exceptions.NotFound:
        return f"{what} {ref.path} does not exist on {where}"
    except exceptions.PermissionDenied:
        return f"{what} {ref.path}: permission denied on {where}"
    except (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded) as exc:
        return f"{where} did not answer ({_first_line(exc)})"
    return None


def _bigquery_problem(sink: SinkSettings) -> str | None:
    from google.api_core import exceptions

    from transforms.io.bigquery import bigquery_client

    ref = parse_bigquery_uri(sink.uri)
    endpoint = sink.bigquery.endpoint if sink.bigquery else None
    where = f"the BigQuery emulator at {endpoint}" if endpoint else "Google BigQuery"
    if not endpoint:
        problem = google_credentials_problem()
        if problem:
            return f"{sink.uri} is on Google BigQuery: {problem}, and no emulator endpoint is set"
    client = bigquery_client(ref.project, endpoint)
    try:
        table = client.get_table(ref.table_id, retry=None, timeout=_CALL_TIMEOUT_S)
    except exceptions.NotFound:
        return (
            f"table {ref.table_id} does not exist on {where}; create it with "
            f"python -m pipelines.release.provision --dataset={ref.project}.{ref.dataset}"
        )
    except exceptions.GoogleAPIError as exc:
        return f"{where} answered {_first_line(exc)}"
    except OSError as exc:  # requests' connection errors
        return f"{where} did not answer ({_first_line(exc)})"
    finally:
        client.close()
    if table.table_type != "TABLE":
        return f"{ref.table_id} on {where} is a {table.table_type}, not a table"
    expected = [(f["name"], f["type"], f.get("mode", "NULLABLE")) for f in bigquery_schema(sink.table_kind)]
    actual = [(f.name, f.field_type, f.mode or "NULLABLE") for f in table.schema]
    problems = schema_problems(expected, actual, some_rows=False)
    if problems:
        return f"table {ref.table_id} on {where} cannot take the sink's rows: {'; '.join(problems)}"
    for problem in schema_problems(expected, actual):
        # Rows with a null there are refused and become write_rejected dead letters; the others are written.
        _LOG.warning("table %s on %s: %s (such rows become write_rejected dead letters)", ref.table_id, where, problem)
    return None


def _type(name: str) -> str:
    return _TYPE_ALIASES.get(name.upper(), name.upper())


def schema_problems(
    expected: Sequence[tuple[str, str, str]], actual: Sequence[tuple[str, str, str]], some_rows: bool = True
) -> list[str]:
    """Why a table with ``actual`` columns (name, type, mode) cannot take rows of ``expected`` (empty: it can).

    ``some_rows=False`` leaves out what refuses only some rows (a REQUIRED column the sink may leave null: those rows
    become write dead letters), keeping what refuses every row.
    """
    problems = []
    have = {name: (kind, mode) for name, kind, mode in actual}
    wanted = {name for name, _, _ in expected}
    for name, kind, mode in expected:
        found = have.get(name)
        if found is None:
            problems.append(f"column {name} is missing")
        elif _type(found[0]) != _type(kind):
            problems.append(f"column {name} is {found[0]}, the sink writes {kind}")
        elif found[1] == "REQUIRED" and mode != "REQUIRED":
            if some_rows:
                problems.append(f"column {name} is REQUIRED, the sink may write null")
        elif found[1] == "REPEATED" and mode != "REPEATED":
            problems.append(f"column {name} is REPEATED, the sink writes one value")
    problems += [f"extra column {n} is REQUIRED" for n, _, m in actual if n not in wanted and m == "REQUIRED"]
    return problems


# ---- Kafka -------------------------------------------------------------------------------------------------------


def _kafka_problem(uri: str, spec: LaunchSpec) -> str | None:
    ref = parse_kafka_uri(uri)
    problem = topic_problem(ref.servers, ref.topic, client_security(spec), timeout_s=_CALL_TIMEOUT_S)
    return f"{problem} (tried {uri} over {spec.kafka_security.protocol})" if problem else None


def client_security(spec: LaunchSpec) -> ClientSecurity:
    """The pipeline's Kafka security settings, with the secrets the spec resolved, for the probe's own connection."""
    security = spec.kafka_security
    return ClientSecurity(
        protocol=security.protocol,
        ca_pem=security.ca_pem,
        client_cert_pem=security.client_cert_pem,
        client_key_pem=spec.kafka_secrets.get("kafka_ssl_client_key"),
        sasl_mechanism=security.sasl_mechanism,
        username=security.sasl_username,
        password=spec.kafka_secrets.get("kafka_sasl_password"),
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
