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
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

import schemas
from transforms import dead_letter as dl
from transforms.parse import avro_nulls_as_absent, writer_decoder
from transforms.records import RecordBatch, SourceRecord

# Bounded JSON-lines input is read in byte ranges (spread over workers) and handed on in batches of lines.
RANGE_BYTES = 4 << 20
BATCH_LINES = 2048
_READ_BLOCK = 1 << 20


def split_into_ranges(path: str, size: int, range_bytes: int = RANGE_BYTES) -> Iterator[tuple[str, int, int]]:
    """(path, start, end) byte ranges of a file; a compressed file is one range (it cannot be split)."""
    if CompressionTypes.detect_compression_type(path) != CompressionTypes.UNCOMPRESSED:
        yield path, 0, -1
        return
    for start in range(0, size, range_bytes):
        yield path, start, min(start + range_bytes, size)


def read_line_range(path: str, start: int, end: int, batch_lines: int = BATCH_LINES) -> Iterator[list[bytes]]:
    """The lines that *start* in ``[start, end)`` (``end`` -1: to the end), in batches; exactly what Beam's text
    source yields for that range: lines end at ``\\n`` or ``\\r\\n`` (not kept), the last one may be unterminated,
    and a line that starts before ``start`` belongs to the previous range."""
    compressed = end < 0
    with FileSystems.open(
        path,
        mime_type="application/octet-stream",
        compression_type=CompressionTypes.AUTO if compressed else CompressionTypes.UNCOMPRESSED,
    ) as handle:
        position = 0  # file offset of the next line's first byte
        skip = False  # the first line read belongs to the range before
        if start > 0:
            handle.seek(start - 1)
            position, skip = start - 1, True
        partial: list[bytes] = []  # the bytes of a line not yet terminated
        batch: list[bytes] = []
        while True:
            block = handle.read(_READ_BLOCK)
            if not block:  # end of file: an unterminated last line is a line, kept as it is
                tail = b"".join(partial)
                if tail and not skip and (compressed or position < end):
                    batch.append(tail)
                break
            cut = block.rfind(b"\n")
            if cut < 0:
                partial.append(block)
                continue
            partial.append(block[:cut])
            lines = b"".join(partial).split(b"\n")
            partial = [block[cut + 1 :]]
            if skip:
                position += len(lines[0]) + 1
                lines = lines[1:]
                skip = False
            for index, line in enumerate(lines):
                if not compressed and position >= end:
                    lines = lines[:index]
                    break
                position += len(line) + 1
            batch.extend(line[:-1] if line[-1:] == b"\r" else line for line in lines)
            while len(batch) >= batch_lines:
                yield batch[:batch_lines]
                batch = batch[batch_lines:]
            if not compressed and position >= end:
                break
        if batch:
            yield batch


class ReadJsonLineBatches(beam.PTransform):
    """The lines of the matched files as ``RecordBatch``es: exactly the lines Beam's text source yields."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        if "://" not in pattern:  # as ReadFromText(validate=True): a local pattern must match when the job is built
            matched = FileSystems.match([pattern], limits=[1])[0]
            if not matched.metadata_list:
                raise OSError(f"No files found based on the file pattern {pattern}")
        self._pattern = pattern

    def expand(self, pbegin):
        return (
            pbegin
            | "Match" >> fileio.MatchFiles(self._pattern)
            | "Split" >> beam.FlatMap(lambda meta: split_into_ranges(meta.path, meta.size_in_bytes))
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.FlatMapTuple(_line_batches).with_output_types(RecordBatch)
        )


def _line_batches(path: str, start: int, end: int) -> Iterator[RecordBatch]:
    for lines in read_line_range(path, start, end):
        yield RecordBatch(path, lines)


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


def avro_container_batches(path: str, data: bytes, batch_records: int = BATCH_LINES) -> Iterator[RecordBatch]:
    """The records of ``read_avro_container`` as ``RecordBatch``es."""
    records = list(read_avro_container(path, data))
    for first in range(0, len(records), batch_records):
        chunk = records[first : first + batch_records]
        yield RecordBatch(path, [r.payload for r in chunk], [r.metadata for r in chunk], [r.decoded for r in chunk])


class ReadAvroFiles(beam.PTransform):
    """Every record of the matched Avro container files, in ``RecordBatch``es."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, pbegin):
        files = pbegin | "Match" >> fileio.MatchFiles(self._pattern) | "Open" >> fileio.ReadMatches()
        return files | "Batches" >> beam.FlatMap(
            lambda f: avro_container_batches(f.metadata.path, f.read())
        ).with_output_types(RecordBatch)


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


# Rows a sink holds before appending them: a bundle can be a whole input (the direct runner's batch bundles are).
_FLUSH_LINES = 4096


class _AppendJsonLinesDoFn(beam.DoFn):
    """Buffers a bundle's rows and appends them when the bundle finishes (before it is committed), or earlier
    every few thousand rows so memory does not grow with the bundle."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    def start_bundle(self) -> None:
        self._lines: list[bytes] = []

    def process(self, row: dict[str, Any]) -> None:
        self._lines.append(orjson.dumps(row) + b"\n")
        if len(self._lines) >= _FLUSH_LINES:
            _ProcessAppender.write(self._prefix, self._lines)
            self._lines = []

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
