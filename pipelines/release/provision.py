"""Creates what the BigQuery sinks write to, idempotently: the dataset, both tables and the final-pane view.

    python -m pipelines.release.provision --dataset=my-project.analytics
    python -m pipelines.release.provision --dataset=local-project.ds --endpoint=http://127.0.0.1:19050   # an emulator

- ``<aggregates>``: schema ``schemas/aggregates.bq.json``, partitioned by DAY on ``window_start``, clustered by
  ``event_type``, ``key``.
- ``<dead_letter>``: schema ``schemas/dead_letter.bq.json``, partitioned by DAY on ``failed_at``.
- ``<aggregates>_final``: a view with only the final pane (highest ``pane_index``) of each window, event type and key.

What exists is checked and reported, never dropped: a table whose columns cannot take the sink's rows is an error
(exit 1), a view with another query is updated. Runs at the same time are safe: an object another run created
between the lookup and the create (409) is checked like any existing one. The endpoint is Google's with
application default credentials, unless ``--endpoint`` or ``BIGQUERY_EMULATOR_HOST`` names an emulator (anonymous
credentials). Bad arguments: one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from google.api_core.exceptions import Conflict, GoogleAPIError, NotFound
from google.cloud import bigquery
from google.cloud.bigquery.retry import DEFAULT_RETRY

from pipelines.startup_check import schema_problems
from schemas import AGGREGATES_TABLE, DEAD_LETTER_TABLE, bigquery_schema
from transforms.io.bigquery import (
    SCHEME,
    bigquery_client,
    normalize_endpoint,
    parse_dataset_id,
    resolve_endpoint,
    validate_table,
)

FINAL_VIEW_SUFFIX = "_final"
AGGREGATES_PARTITION_FIELD = "window_start"
AGGREGATES_CLUSTERING = ["event_type", "key"]
DEAD_LETTER_PARTITION_FIELD = "failed_at"
# Every API call is bounded: a wrong endpoint fails in about a minute instead of hanging.
_TIMEOUT_S = 30.0
_RETRY = DEFAULT_RETRY.with_timeout(60.0)


class ProvisionError(Exception):
    """Something exists that the sinks cannot use; the message says what."""


@dataclass(frozen=True)
class Outcome:
    kind: str  # dataset, table or view
    name: str
    status: str  # created, found or updated
    detail: str = ""

    def line(self) -> str:
        return f"{self.kind:<8} {self.name:<48} {self.status}" + (f"  ({self.detail})" if self.detail else "")


def _schema(table_kind: str) -> list[bigquery.SchemaField]:
    return [bigquery.SchemaField.from_api_repr(dict(field)) for field in bigquery_schema(table_kind)]


def aggregates_table(table_id: str) -> bigquery.Table:
    table = bigquery.Table(table_id, schema=_schema(AGGREGATES_TABLE))
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=AGGREGATES_PARTITION_FIELD
    )
    table.clustering_fields = list(AGGREGATES_CLUSTERING)
    table.description = "realtime-analytics aggregates, one row per window, event_type, key and pane"
    return table


def dead_letter_table(table_id: str) -> bigquery.Table:
    table = bigquery.Table(table_id, schema=_schema(DEAD_LETTER_TABLE))
    table.time_partitioning = bigquery.TimePartitioning(
        type_=bigquery.TimePartitioningType.DAY, field=DEAD_LETTER_PARTITION_FIELD
    )
    table.description = "realtime-analytics dead letters, one row per rejected record or refused row"
    return table


def final_view_sql(aggregates_table_id: str) -> str:
    """Only the final pane of each (window, event_type, key): panes accumulate, the highest pane_index is final.

    ``WHERE TRUE`` because BigQuery requires a WHERE, GROUP BY or HAVING clause next to QUALIFY. Ties (the same
    pane written twice by an at-least-once retry) are identical rows; ROW_NUMBER keeps one of them.
    """
    return (
        f"SELECT * FROM `{aggregates_table_id}` WHERE TRUE\n"
        "QUALIFY ROW_NUMBER() OVER (\n"
        "  PARTITION BY window_start, window_end, event_type, key ORDER BY pane_index DESC) = 1"
    )


def _describe_partitioning(table: bigquery.Table) -> str:
    parts = []
    if table.time_partitioning is not None:
        parts.append(
            f"partitioned by {table.time_partitioning.type_} on {table.time_partitioning.field or '_PARTITIONTIME'}"
        )
    if table.clustering_fields:
        parts.append(f"clustered by {', '.join(table.clustering_fields)}")
    return ", ".join(parts)


def _columns(schema: Sequence[bigquery.SchemaField]) -> list[tuple[str, str, str]]:
    return [(field.name, field.field_type, field.mode or "NULLABLE") for field in schema]


def create_or_get_table(client: bigquery.Client, wanted: bigquery.Table) -> bigquery.Table | None:
    """Creates ``wanted``; None if this call created it, else the table a concurrent run created first (409)."""
    try:
        client.create_table(wanted, retry=_RETRY, timeout=_TIMEOUT_S)
        return None
    except Conflict:
        return client.get_table(
            f"{wanted.project}.{wanted.dataset_id}.{wanted.table_id}", retry=_RETRY, timeout=_TIMEOUT_S
        )


def create_or_get_dataset(client: bigquery.Client, wanted: bigquery.Dataset) -> bigquery.Dataset | None:
    """Creates ``wanted``; None if this call created it, else the dataset a concurrent run created first (409)."""
    try:
        client.create_dataset(wanted, retry=_RETRY, timeout=_TIMEOUT_S)
        return None
    except Conflict:
        return client.get_dataset(f"{wanted.project}.{wanted.dataset_id}", retry=_RETRY, timeout=_TIMEOUT_S)


def _ensure_table(client: bigquery.Client, wanted: bigquery.Table) -> Outcome:
    table_id = f"{wanted.project}.{wanted.dataset_id}.{wanted.table_id}"
    try:
        existing = client.get_table(table_id, retry=_RETRY, timeout=_TIMEOUT_S)
    except NotFound:
        existing = create_or_get_table(client, wanted)
        if existing is None:
            return Outcome("table", table_id, "created", _describe_partitioning(wanted))
    if existing.table_type != "TABLE":
        raise ProvisionError(f"{table_id} exists but is a {existing.table_type}, not a table")
    problems = schema_problems(_columns(wanted.schema), _columns(existing.schema))
    if problems:
        raise ProvisionError(f"{table_id} exists but cannot take the sink's rows: {'; '.join(problems)}")
    detail = _describe_partitioning(existing) or "not partitioned"
    if _describe_partitioning(existing) != _describe_partitioning(wanted):
        detail += f"; provisioning would have {_describe_partitioning(wanted)}"
    return Outcome("table", table_id, "found", detail)


def _ensure_view(client: bigquery.Client, view_id: str, query: str) -> Outcome:
    try:
        existing = client.get_table(view_id, retry=_RETRY, timeout=_TIMEOUT_S)
    except NotFound:
        view = bigquery.Table(view_id)
        view.view_query = query
        view.description = "Final pane of each window, event_type and key"
        existing = create_or_get_table(client, view)
        if existing is None:
            return Outcome("view", view_id, "created", "final pane per window, event_type, key")
    if existing.table_type != "VIEW":
        raise ProvisionError(f"{view_id} exists but is a {existing.table_type}, not a view")
    if (existing.view_query or "").strip() == query.strip():
        return Outcome("view", view_id, "found")
    existing.view_query = query
    client.update_table(existing, ["view_query"], retry=_RETRY, timeout=_TIMEOUT_S)
    return Outcome("view", view_id, "updated", "its query differed")


def provision(
    client: bigquery.Client,
    project: str,
    dataset: str,
    aggregates: str = AGGREGATES_TABLE,
    dead_letter: str = DEAD_LETTER_TABLE,
    location: str | None = None,
) -> list[Outcome]:
    """Creates (or finds) the dataset, both tables and the final-pane view; returns what happened, in order."""
    dataset_id = f"{project}.{dataset}"
    outcomes = []
    try:
        found = client.get_dataset(dataset_id, retry=_RETRY, timeout=_TIMEOUT_S)
        outcomes.append(Outcome("dataset", dataset_id, "found", f"location {found.location}" if found.location else ""))
    except NotFound:
        wanted = bigquery.Dataset(dataset_id)
        if location:
            wanted.location = location
        found = create_or_get_dataset(client, wanted)
        where = location if found is None else found.location
        status = "created" if found is None else "found"
        outcomes.append(Outcome("dataset", dataset_id, status, f"location {where}" if where else ""))
    outcomes.append(_ensure_table(client, aggregates_table(f"{dataset_id}.{aggregates}")))
    outcomes.append(_ensure_table(client, dead_letter_table(f"{dataset_id}.{dead_letter}")))
    view_id = f"{dataset_id}.{aggregates}{FINAL_VIEW_SUFFIX}"
    outcomes.append(_ensure_view(client, view_id, final_view_sql(f"{dataset_id}.{aggregates}")))
    return outcomes


class _ArgumentError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit code 2, from main()
        raise _ArgumentError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m pipelines.release.provision",
        description="Create the BigQuery dataset, tables and final-pane view the sinks write to (idempotent).",
        allow_abbrev=False,
    )
    parser.add_argument("--dataset", required=True, help="PROJECT.DATASET, e.g. my-project.analytics")
    parser.add_argument("--aggregates_table", default=AGGREGATES_TABLE, help="aggregates table name")
    parser.add_argument("--dead_letter_table", default=DEAD_LETTER_TABLE, help="dead-letter table name")
    parser.add_argument("--location", default=None, help="location of a new dataset, e.g. EU or us-central1")
    parser.add_argument(
        "--endpoint",
        default=None,
        help="a BigQuery emulator's URL (anonymous credentials); default: $BIGQUERY_EMULATOR_HOST if set, else "
        "Google's endpoint with application default credentials",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        project, dataset = parse_dataset_id(args.dataset)
        aggregates = validate_table(args.aggregates_table)
        dead_letter = validate_table(args.dead_letter_table)
        validate_table(aggregates + FINAL_VIEW_SUFFIX)
        if aggregates == dead_letter:
            raise ValueError(f"--aggregates_table and --dead_letter_table are both {aggregates!r}")
        endpoint = normalize_endpoint(args.endpoint, "--endpoint") if args.endpoint else resolve_endpoint()
    except (_ArgumentError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    where = f"emulator {endpoint}, anonymous credentials" if endpoint else "Google, application default credentials"
    print(f"provisioning {project}.{dataset} ({where})")
    client = bigquery_client(project, endpoint)
    try:
        for outcome in provision(client, project, dataset, aggregates, dead_letter, args.location):
            print(outcome.line())
    except ProvisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except GoogleAPIError as exc:
        print(f"error: BigQuery: {exc}".splitlines()[0], file=sys.stderr)
        return 1
    finally:
        client.close()
    base = f"{SCHEME}://{project}.{dataset}"
    print(f"sinks: --sink={base}.{aggregates} --dead_letter_sink={base}.{dead_letter}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
