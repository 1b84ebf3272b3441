"""URI -> source or sink transform. The one place that knows which schemes exist.

Sources produce ``SourceRecord``s; sinks take JSON-ready rows (aggregates or dead letters).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import apache_beam as beam

from transforms.io.files import ReadAvroFiles, ReadJsonLines, WriteJsonLines
from transforms.io.pubsub import SCHEME as PUBSUB
from transforms.io.pubsub import ReadPubSubRecords, WritePubSubRows, parse_pubsub_uri
from transforms.io.replay import replay_stream
from transforms.io.synthetic import SCHEME as SYNTHETIC
from transforms.io.synthetic import ReadSynthetic, generate, parse_synthetic_uri
from transforms.records import SourceRecord

SOURCE_SCHEMES = ("<path or glob>", "file://", "gs://", "synthetic://", "pubsub://")
SINK_SCHEMES = ("<path prefix>", "file://", "pubsub:// (dead letters)")
# Beam filesystems the file source reads (gs:// needs Google credentials; local paths need nothing).
FILE_SCHEMES = ("", "file", "gs")
# Sources that never end: they make the pipeline a streaming one.
UNBOUNDED_SCHEMES = (PUBSUB,)


class UnsupportedUri(ValueError):
    """A source/sink URI this build cannot handle; the message names what is supported."""


def scheme_of(uri: str) -> str:
    scheme = urlsplit(uri).scheme
    # A Windows drive letter or a bare path has no (or a one-letter) scheme: both are files.
    return "" if len(scheme) <= 1 else scheme.lower()


def _local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def check_source(uri: str, fmt: str) -> None:
    """Raises UnsupportedUri/ValueError with a clear message if ``uri`` cannot be read in ``fmt``."""
    scheme = scheme_of(uri)
    if scheme == SYNTHETIC:
        parse_synthetic_uri(uri)
    elif scheme == PUBSUB:
        parse_pubsub_uri(uri)
    elif scheme not in FILE_SCHEMES:
        raise UnsupportedUri(f"unsupported source scheme {scheme!r}; supported: {', '.join(SOURCE_SCHEMES)}")
    elif not _local_path(uri):
        raise UnsupportedUri("source path is empty")


def check_sink(uri: str) -> None:
    scheme = scheme_of(uri)
    if scheme == PUBSUB:
        if not parse_pubsub_uri(uri).is_topic:
            raise UnsupportedUri(f"a Pub/Sub sink must be a topic (pubsub://projects/P/topics/T), got {uri!r}")
        return
    if scheme not in ("", "file"):
        raise UnsupportedUri(f"unsupported sink scheme {scheme!r}; supported: {', '.join(SINK_SCHEMES)}")
    if not _local_path(uri) or _local_path(uri).endswith("/"):
        raise UnsupportedUri(f"sink {uri!r} must be a path prefix such as output/aggregates")


def is_unbounded(uri: str) -> bool:
    return scheme_of(uri) in UNBOUNDED_SCHEMES


def is_replay(uri: str) -> bool:
    return scheme_of(uri) == SYNTHETIC and parse_synthetic_uri(uri).mode == "replay"


class ReadRecords(beam.PTransform):
    """Any supported source URI -> SourceRecords (timestamped by arrival where the source knows it)."""

    def __init__(self, uri: str, fmt: str = "json", streaming: bool = False) -> None:
        super().__init__()
        check_source(uri, fmt)
        self._uri = uri
        self._fmt = fmt
        self._streaming = streaming

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
        path = _local_path(self._uri)
        if self._fmt == "avro":
            return pbegin | "AvroFiles" >> ReadAvroFiles(path)
        return pbegin | "JsonLines" >> ReadJsonLines(path)


class WriteRows(beam.PTransform):
    """JSON-ready rows -> the sink named by ``uri``."""

    def __init__(self, uri: str, streaming: bool = False) -> None:
        super().__init__()
        check_sink(uri)
        self._uri = uri
        self._streaming = streaming

    def expand(self, rows):
        if scheme_of(self._uri) == PUBSUB:
            return rows | "PubSub" >> WritePubSubRows(self._uri)
        return rows | "JsonFiles" >> WriteJsonLines(_local_path(self._uri))
