"""Local (or any Beam filesystem) files: JSON lines and Avro container files in, newline-delimited JSON out."""

from __future__ import annotations

import atexit
import io
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fastavro
import orjson
from apache_beam import coders
from apache_beam.io import fileio

import schemas
from transforms import dead_letter as dl
from transforms.parse import avro_nulls_as_absent, writer_decoder
from transforms.records import SourceRecord


class ReadJsonLines(beam.PTransform):
    """Each line of the matched files, as raw bytes (an undecodable line is a record like any other)."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        return (
            pbegin
            # Remote globs are matched when the job runs, not while the graph is built (a launcher may lack
            # access to the bucket, and building offline must not wait on it).
            | "ReadLines"
            >> beam.io.ReadFromTextWithFilename(
                self._pattern, coder=coders.BytesCoder(), validate="://" not in self._pattern
            )
            | "ToRecord" >> beam.MapTuple(lambda path, line: SourceRecord(line, path)).with_output_types(SourceRecord)
        )


def read_avro_container(path: str, data: bytes) -> Iterator[SourceRecord]:
    """Records of one Avro container file; ``payload`` is each record's schemaless encoding (for the dead letter).

    The file's header carries its writer schema. The contract's own schema: records as read. Another one is
    checked against the contract's schema once per file: compatible (a newer producer's added optional field,
    an older one's missing optional field) -> each record resolved to the contract's schema, as the Confluent
    decoder does; incompatible -> each record carries the ``incompatible_schema`` rejection.
    A file that cannot be read, or a corrupt block, yields one record carrying the ``malformed_avro`` rejection,
    so the problem reaches the dead letter instead of failing the run.
    """
    stream = io.BytesIO(data)
    index = -1
    try:
        reader = fastavro.reader(stream)
        writer_schema = fastavro.parse_schema(reader.writer_schema)
        contract = schemas.event_avro_schema()
        resolve = None if writer_schema == contract else writer_decoder(writer_schema, "the file's writer schema")
        for index, obj in enumerate(reader):  # noqa: B007 - index is reported on failure
            body = io.BytesIO()
            fastavro.schemaless_writer(body, writer_schema, obj)
            payload = body.getvalue()
            decoded = avro_nulls_as_absent(obj) if resolve is None else resolve(payload)
            yield SourceRecord(payload, path, {"record": index}, decoded)
    except Exception as exc:  # noqa: BLE001 - fastavro raises many types on a corrupt file; all become dead letters
        offset = stream.tell()
        reason = dl.Rejection(dl.MALFORMED_AVRO, None, f"unreadable Avro container after record {index}: {exc}"[:500])
        yield SourceRecord(data[offset : offset + 1024], path, {"record": index + 1, "byte_offset": offset}, reason)


class ReadAvroFiles(beam.PTransform):
    """Every record of the matched Avro container files."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern)
            | "Open" >> fileio.ReadMatches()
            | "Records"
            >> beam.FlatMap(lambda f: read_avro_container(f.metadata.path, f.read())).with_output_types(SourceRecord)
        )


class _ProcessAppender:
    """One append-only file per (prefix, worker process), shared by every DoFn instance and thread in it.

    Runners create many DoFn instances (the direct runner one per bundle); sharing the handle keeps it to one
    file per process instead of one per bundle.
    """

    _lock = threading.Lock()
    _handles: dict[str, Any] = {}

    @classmethod
    def write(cls, prefix: str, lines: list[bytes]) -> None:
        with cls._lock:
            handle = cls._handles.get(prefix)
            if handle is not None and os.fstat(handle.fileno()).st_nlink == 0:
                # Its file was removed (the CLI clears a previous run's outputs): writing on would lose the rows.
                handle.close()
                handle = None
            if handle is None:
                directory = os.path.dirname(prefix)
                if directory:
                    os.makedirs(directory, exist_ok=True)
                handle = open(f"{prefix}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl", "ab")  # noqa: SIM115
                cls._handles[prefix] = handle
            handle.write(b"".join(lines))
            handle.flush()

    @classmethod
    def close_all(cls) -> None:
        with cls._lock:
            for handle in cls._handles.values():
                handle.close()
            cls._handles.clear()


atexit.register(_ProcessAppender.close_all)


class _AppendJsonLinesDoFn(beam.DoFn):
    """Buffers a bundle's rows and appends them when the bundle finishes (before it is committed)."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def start_bundle(self) -> None:
        self._lines: list[bytes] = []

    def process(self, row: dict[str, Any]) -> None:
        self._lines.append(orjson.dumps(row) + b"\n")

    def finish_bundle(self) -> None:
        if self._lines:
            _ProcessAppender.write(self._prefix, self._lines)
            self._lines = []


class WriteJsonLines(beam.PTransform):
    """Rows -> newline-delimited JSON files whose names start with ``prefix`` (local filesystem).

    Rows are appended as they come, in any window, batch or streaming: there is no grouping step that could hold
    them back or drop a late one, and every bundle is flushed before it is committed. A retried bundle may write
    its rows twice (at-least-once): local files are for local runs; BigQuery is the exactly-once sink.
    """

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self._prefix = prefix

    def expand(self, rows):
        return rows | "Append" >> beam.ParDo(_AppendJsonLinesDoFn(self._prefix))
