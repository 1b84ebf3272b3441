"""URI -> source or sink transform. The one place that knows which schemes exist.

Sources produce ``SourceRecord``s; sinks take JSON-ready rows (aggregates or dead letters).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import urlsplit

import apache_beam as beam

from transforms.io.bigquery import SCHEME as BIGQUERY
from transforms.io.bigquery import STREAMING_INSERTS, WriteToBigQueryTable, parse_bigquery_uri
from transforms.io.files import ReadAvroFiles, ReadJsonLineBatches, WriteJsonLines
from transforms.io.kafka import SCHEME as KAFKA
from transforms.io.kafka import KafkaSettings, ReadKafkaRecords, WriteKafkaRows, parse_kafka_uri
from transforms.io.pubsub import SCHEME as PUBSUB
from transforms.io.pubsub import ReadPubSubRecords, WritePubSubRows, parse_pubsub_uri
from transforms.io.replay import replay_stream
from transforms.io.synthetic import SCHEME as SYNTHETIC
from transforms.io.synthetic import ReadSynthetic, generate, parse_synthetic_uri
from transforms.records import SourceRecord

SOURCE_SCHEMES = ("<path or glob>", "file://", "gs://", "synthetic://", "pubsub://")
SINK_SCHEMES = (
    "<path prefix>",
    "file://",
    "pubsub:// (dead letters)",
    "kafka:// (dead letters)",
    "bigquery://PROJECT.DATASET.TABLE",
)
# Beam filesystems the file source reads (gs:// needs Google credentials; local paths need nothing).
FILE_SCHEMES = ("", "file", "gs")
# Sources that never end: they make the pipeline a streaming one.
UNBOUNDED_SCHEMES = (PUBSUB, KAFKA)
# Schemes whose transforms are Java (cross-language): they need an expansion service and a portable runner.
CROSS_LANGUAGE_SCHEMES = (KAFKA,)


class UnsupportedUri(ValueError):
    """A source/sink URI this build cannot handle; the message names what is supported."""


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    # A Windows drive letter or a bare path has no (or a one-letter) scheme: both are files.
    return "" if len(scheme) <= 1 else scheme.lower()


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def local_file_prefix(uri: str) -> str | None:
    """The local path a sink URI names (``file://`` stripped), or None for remote sinks (BigQuery, brokers)."""
    return _local_path(uri) if scheme_of(uri) in ("", "file") else None


def check_source(uri: str, fmt: str) -> None:
    """Raises UnsupportedUri/ValueError with a clear message if ``uri`` cannot be read in ``fmt``."""
    scheme = scheme_of(uri)
    if scheme == SYNTHETIC:
        generated = parse_synthetic_uri(uri).format
        if generated != fmt:
            raise ValueError(f"synthetic format={generated} does not match --format={fmt}; every record would fail")
    elif scheme == PUBSUB:
        parse_pubsub_uri(uri)
    elif scheme == KAFKA:
        parse_kafka_uri(uri)
    elif scheme not in FILE_SCHEMES:
        raise UnsupportedUri(f"unsupported source scheme {scheme!r}; supported: {', '.join(SOURCE_SCHEMES)}")
    elif not _local_path(uri):
        raise UnsupportedUri("source path is empty")


def check_sink(uri: str) -> None:
    scheme = scheme_of(uri)
    if scheme == BIGQUERY:
        try:
            parse_bigquery_uri(uri)
        except ValueError as exc:
            raise UnsupportedUri(str(exc)) from None
        return
    if scheme == PUBSUB:
        if not parse_pubsub_uri(uri).is_topic:
            raise UnsupportedUri(f"a Pub/Sub sink must be a topic (pubsub://projects/P/topics/T), got {uri!r}")
        return
    if scheme == KAFKA:
        parse_kafka_uri(uri)
        return
    if scheme not in ("", "file"):
        raise UnsupportedUri(f"unsupported sink scheme {scheme!r}; supported: {', '.join(SINK_SCHEMES)}")
    if not _local_path(uri) or _local_path(uri).endswith("/"):
        raise UnsupportedUri(f"sink {uri!r} must be a path prefix such as output/aggregates")


def is_unbounded(uri: str) -> bool:
    return scheme_of(uri) in UNBOUNDED_SCHEMES


def is_replay(uri: str) -> bool:
    return scheme_of(uri) == SYNTHETIC and parse_synthetic_uri(uri).mode == "replay"


def is_cross_language(uri: str) -> bool:
    return scheme_of(uri) in CROSS_LANGUAGE_SCHEMES


class ReadRecords(beam.PTransform):
    """Any supported source URI -> SourceRecords or RecordBatches (timestamped by arrival where the source knows it).

    Sources that can read many records at once (files, the synthetic generator) give ``RecordBatch``es; brokers give
    one SourceRecord per message, which the graph gathers into batches itself (transforms/batching.py).
    """

    def __init__(
        self, uri: str, fmt: str = "json", streaming: bool = False, kafka: KafkaSettings | None = None
    ) -> None:
        super().__init__()
        check_source(uri, fmt)
        self._uri = uri
        self._fmt = fmt
        self._streaming = streaming
        self._kafka = kafka

    def expand(self, pbegin):
        scheme = scheme_of(self._uri)
        if scheme == SYNTHETIC:
            spec = parse_synthetic_uri(self._uri)
            if spec.mode == "replay":
                arrivals = (
                    (arrival, SourceRecord(payload, SYNTHETIC, {"sequence": seq}))
                    for seq, arrival, payload in generate(spec)
                )
                return pbegin | "Replay" >> replay_stream(arrivals)
            return pbegin | "Synthetic" >> ReadSynthetic(self._uri, streaming=self._streaming)
        if scheme == PUBSUB:
            return pbegin | "PubSub" >> ReadPubSubRecords(self._uri)
        if scheme == KAFKA:
            return pbegin | "Kafka" >> ReadKafkaRecords(self._uri, self._kafka)
        path = _local_path(self._uri)
        if self._fmt == "avro":
            return pbegin | "AvroFiles" >> ReadAvroFiles(path)
        return pbegin | "JsonLines" >> ReadJsonLineBatches(path)


@dataclass(frozen=True)
class BigQuerySettings:
    """How ``bigquery://`` sinks write (``transforms/io/bigquery.py``: ``WriteToBigQueryTable``)."""

    write_method: str = STREAMING_INSERTS
    endpoint: str | None = None  # a BigQuery emulator's REST endpoint; None = Google's, with the job's credentials
    storage_endpoint: str | None = None  # STORAGE_WRITE_API: the emulator's gRPC address; None = Google's
    exactly_once: bool = True  # STORAGE_WRITE_API: the runner retries bundles with stable input


@dataclass(frozen=True)
class SinkSettings:
    """Everything a sink needs: where (``uri``), what (``table_kind``: ``aggregates`` or ``dead_letter``, the schema
    of a table), and the settings of its kind (``bigquery`` for ``bigquery://``, ``kafka`` for ``kafka://``)."""

    uri: str
    table_kind: str | None = None
    streaming: bool = False
    bigquery: BigQuerySettings | None = None
    kafka: KafkaSettings | None = None


class WriteRowsResult(NamedTuple):
    """What a sink gives back. ``failed_rows``: the rows the sink refused, as dead letters (``stage=write``); None for
    sinks that cannot refuse a row (files, Pub/Sub, Kafka)."""

    failed_rows: beam.PCollection | None = None


class WriteRows(beam.PTransform):
    """JSON-ready rows -> the sink ``settings`` names; returns a ``WriteRowsResult``."""

    def __init__(self, settings: SinkSettings) -> None:
        super().__init__()
        check_sink(settings.uri)
        self._settings = settings
        self._bigquery = None
        if scheme_of(settings.uri) == BIGQUERY:
            bigquery = settings.bigquery or BigQuerySettings()
            self._bigquery = WriteToBigQueryTable(
                settings.uri,
                settings.table_kind,
                bigquery.write_method,
                settings.streaming,
                bigquery.endpoint,
                bigquery.storage_endpoint,
                bigquery.exactly_once,
            )

    def expand(self, rows) -> WriteRowsResult:
        uri = self._settings.uri
        if self._bigquery is not None:
            return WriteRowsResult(failed_rows=rows | "BigQuery" >> self._bigquery)
        if scheme_of(uri) == PUBSUB:
            rows | "PubSub" >> WritePubSubRows(uri)
        elif scheme_of(uri) == KAFKA:
            rows | "Kafka" >> WriteKafkaRows(uri, self._settings.kafka)
        else:
            rows | "JsonFiles" >> WriteJsonLines(_local_path(uri))
        return WriteRowsResult()
