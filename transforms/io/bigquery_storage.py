"""BigQuery Storage Write API sink, pure Python: rows appended as protocol buffers over gRPC (``AppendRows``).

Beam's own ``WriteToBigQuery(method=STORAGE_WRITE_API)`` is a cross-language Java transform (expansion service, Java,
a runner that executes Java), its row conversion has no BigQuery ``JSON`` type, and its one endpoint flag cannot
reach an emulator that serves REST and gRPC on separate ports. This sink uses google-cloud-bigquery-storage's
``BigQueryWriteClient`` from Python, so it runs on every runner, and the emulator path is the production path with
another address and anonymous credentials.

Graph (rows are in the global window): ``Shard`` (a random shard of ``SHARDS``) -> ``Batch`` (GroupIntoBatches:
``BATCH_ROWS`` rows or ``BATCH_WAIT_S`` seconds) -> ``Append`` (stateful per shard) -> the rows BigQuery refused, as
``(table, row, errors)`` -- the shape of Beam's ``failed_rows_with_errors``, so both write methods share one
dead-letter conversion.

Delivery (docs/connectors-bigquery.md has the whole argument):

- **exactly-once** (``exactly_once=True``): each shard owns an application-created ``COMMITTED`` stream; the stream
  name and the next offset live in the shard's state. Every request carries its offset, so a request BigQuery
  already holds is answered ``ALREADY_EXISTS`` and counted as written. A retried bundle starts from the state of
  the last committed one and, its input being the same (the output of GroupIntoBatches), sends the same requests
  at the same offsets: nothing is stored twice. Two rules keep a retry's requests identical to the first
  attempt's: a new stream is saved in state before anything is appended to it, and after a request that wrote
  nothing (rows refused) the rest of the rows wait in state for a later bundle (``RESUME`` timers) instead of being
  sent at offsets the retry could not reproduce. Needs a runner that retries a bundle with the same input and its
  state rolled back, or fails the job instead (DirectRunner, Prism, Dataflow).
- **at-least-once** (``exactly_once=False``): the table's ``_default`` stream, no offsets, no state; a retried
  bundle appends its rows again. For runners that replay input after a failure without restoring the state that
  went with it in lockstep (Flink restores a checkpoint, re-reads the source and may group rows differently).

Refused rows: a request with invalid rows is refused as a whole with per-row ``row_errors``; those rows become dead
letters with BigQuery's text and the others are sent again. Rows that cannot be encoded or exceed the request limit
are refused before sending. Request-level permanent errors (table missing, permission denied) refuse the request's
rows and every later row of the call. Transient errors are retried with bounded exponential backoff, then the bundle
fails and the runner retries it.
"""

from __future__ import annotations

import base64
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import apache_beam as beam
import orjson
from apache_beam.coders import FastPrimitivesCoder, StrUtf8Coder, VarIntCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.retry import FuzzedExponentialIntervals
from apache_beam.utils.timestamp import Timestamp
from google.api_core import exceptions as api_exceptions
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from schemas import bigquery_schema
from transforms.faults import fail_once
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.timefmt import parse_rfc3339_us

_LOG = logging.getLogger(__name__)

# BigQuery's limit for one AppendRows request; the rows get what the request's other fields leave.
MAX_REQUEST_BYTES = 10 * 1024 * 1024
_REQUEST_HEADROOM_BYTES = 64 * 1024  # stream name, offset, descriptor, framing
_ROW_FRAMING_BYTES = 6  # tag + length varint of one serialized row inside ProtoRows
SHARDS = 4
BATCH_ROWS = 500
BATCH_WAIT_S = 1.0
# Transient errors: 7 attempts, delays 0.5 s doubling to at most 16 s (fuzzed), ~30 s in all, then the bundle fails.
RETRY_ATTEMPTS = 7
RETRY_INITIAL_S = 0.5
RETRY_MAX_DELAY_S = 16.0
CALL_TIMEOUT_S = 60.0
RESUME_DELAY_S = 0.2
FAULT_AFTER_APPEND = "bigquery_storage_after_append"

# gRPC status codes (google.rpc.Code) as they appear in an AppendRowsResponse's in-band error.
_CODE_NAMES = {
    1: "CANCELLED",
    2: "UNKNOWN",
    3: "INVALID_ARGUMENT",
    4: "DEADLINE_EXCEEDED",
    5: "NOT_FOUND",
    6: "ALREADY_EXISTS",
    7: "PERMISSION_DENIED",
    8: "RESOURCE_EXHAUSTED",
    9: "FAILED_PRECONDITION",
    10: "ABORTED",
    11: "OUT_OF_RANGE",
    12: "UNIMPLEMENTED",
    13: "INTERNAL",
    14: "UNAVAILABLE",
    16: "UNAUTHENTICATED",
}
_TRANSIENT_CODES = {
    "CANCELLED",
    "UNKNOWN",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "INTERNAL",
    "UNAVAILABLE",
}
# Request-level errors that may mean "this stream is gone" (expired, finalized, unknown to a restarted emulator).
_STREAM_SUSPECT_CODES = {"INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE"}

_F = descriptor_pb2.FieldDescriptorProto
# BigQuery type -> protocol buffer field type (cloud.google.com/bigquery/docs/write-api#data_type_conversions).
_PROTO_TYPES = {
    "STRING": _F.TYPE_STRING,
    "JSON": _F.TYPE_STRING,  # JSON text
    "BYTES": _F.TYPE_BYTES,
    "INT64": _F.TYPE_INT64,
    "INTEGER": _F.TYPE_INT64,
    "FLOAT64": _F.TYPE_DOUBLE,
    "FLOAT": _F.TYPE_DOUBLE,
    "BOOL": _F.TYPE_BOOL,
    "BOOLEAN": _F.TYPE_BOOL,
    "TIMESTAMP": _F.TYPE_INT64,  # microseconds since the epoch
}
_PROTO_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StorageWriteUnavailable(RuntimeError):
    """Transient errors outlasted the retry budget; the bundle fails and the runner retries it."""


class RowConversionError(ValueError):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


def json_text(value: Any) -> str:
    """A JSON column's value as JSON text: the form both insertAll and the Storage Write API take."""
    return orjson.dumps(value).decode("utf-8")


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("not a string")
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("not an integer")
    return value


def _double(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("not a number")
    return float(value)


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("not a boolean")
    return value


def _bytes(value: Any) -> bytes:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, str):  # the JSON-ready form: base64
        return base64.b64decode(value, validate=True)
    raise TypeError("not base64 text or bytes")


def _timestamp(value: Any) -> int:
    if not isinstance(value, str):
        raise TypeError("not an RFC 3339 string")
    micros = parse_rfc3339_us(value)
    if micros is None:
        raise ValueError("not an RFC 3339 date-time with offset")
    return micros


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "STRING": _string,
    "JSON": json_text,
    "BYTES": _bytes,
    "INT64": _integer,
    "INTEGER": _integer,
    "FLOAT64": _double,
    "FLOAT": _double,
    "BOOL": _boolean,
    "BOOLEAN": _boolean,
    "TIMESTAMP": _timestamp,
}


def proto_descriptor(table_kind: str) -> descriptor_pb2.DescriptorProto:
    """The row message of a table in ``schemas/<table_kind>.bq.json``, field numbers in schema order.

    Every field is ``optional``, REQUIRED columns included: a missing value then reaches BigQuery, which refuses the
    row with its own message, instead of the protobuf library refusing to serialize it.
    """
    message = descriptor_pb2.DescriptorProto(name="Row")
    for number, column in enumerate(bigquery_schema(table_kind), start=1):
        name, kind = column["name"], column["type"].upper()
        if kind not in _PROTO_TYPES or column.get("mode", "NULLABLE").upper() == "REPEATED":
            raise ValueError(f"{table_kind}.{name}: {column.get('mode', '')} {kind} is not supported by this sink")
        if not _PROTO_NAME.fullmatch(name):
            raise ValueError(f"{table_kind}.{name}: not usable as a protocol buffer field name")
        message.field.add(name=name, number=number, type=_PROTO_TYPES[kind], label=_F.LABEL_OPTIONAL)
    return message


class RowEncoder:
    """JSON-ready rows (RFC 3339 timestamps, base64 bytes) -> serialized protocol buffers of ``proto_descriptor``."""

    def __init__(self, table_kind: str) -> None:
        self.descriptor = proto_descriptor(table_kind)
        self._columns = [(c["name"], _CONVERTERS[c["type"].upper()]) for c in bigquery_schema(table_kind)]
        self._names = {name for name, _ in self._columns}
        file = descriptor_pb2.FileDescriptorProto(name=f"realtime_analytics_{table_kind}.proto", package="ra")
        file.message_type.add().CopyFrom(self.descriptor)
        pool = descriptor_pool.DescriptorPool()
        pool.Add(file)
        self._message = message_factory.GetMessageClass(pool.FindMessageTypeByName(f"ra.{self.descriptor.name}"))

    def encode(self, row: dict[str, Any]) -> bytes:
        unknown = sorted(set(row) - self._names)
        if unknown:
            raise RowConversionError(unknown[0], f"no such field: {unknown[0]}.")
        message = self._message()
        for name, convert in self._columns:
            value = row.get(name)
            if value is None:
                continue
            try:
                setattr(message, name, convert(value))
            except (TypeError, ValueError) as exc:
                raise RowConversionError(name, f"cannot convert {name}={value!r:.200} ({exc})") from None
        return message.SerializeToString()


def table_path(project: str, dataset: str, table: str) -> str:
    return f"projects/{project}/datasets/{dataset}/tables/{table}"


def write_client(storage_endpoint: str | None):
    """A BigQueryWriteClient: Google's endpoint with the job's credentials, or an emulator's (plaintext, anonymous)."""
    from google.cloud.bigquery_storage_v1 import BigQueryWriteClient

    if not storage_endpoint:
        return BigQueryWriteClient()
    import grpc
    from google.cloud.bigquery_storage_v1.services.big_query_write.transports import BigQueryWriteGrpcTransport

    # A transport built on an explicit channel uses no credentials at all (the emulator wants none).
    return BigQueryWriteClient(transport=BigQueryWriteGrpcTransport(channel=grpc.insecure_channel(storage_endpoint)))


Refusal = tuple[dict[str, Any], list[dict[str, str]]]  # (row, BigQuery-style errors: reason, location, message)


class WriteResult(NamedTuple):
    """What ``StorageWriter.write`` did; the DoFn saves ``stream``/``offset``/``leftover`` in the shard's state."""

    stream: str | None
    offset: int
    refused: list[Refusal]
    leftover: list[dict[str, Any]]  # rows for a later bundle (exactly-once only)
    appended: int
    already_written: int


@dataclass
class _Response:
    kind: str  # written, already_written, rows_refused, stream_unusable, failed
    row_errors: list[tuple[int, str, str]] = field(default_factory=list)  # (index, code, message)
    code: str = ""
    message: str = ""


def _error(reason: str, message: str, location: str = "") -> dict[str, str]:
    return {"reason": reason, "location": location, "message": message}


def _counter(name: str):
    return beam.metrics.Metrics.counter(METRICS_NAMESPACE, name)


class StorageWriter:
    """Appends rows to one table through the Storage Write API. Picklable until ``open()``; one per DoFn instance."""

    def __init__(
        self,
        project: str,
        dataset: str,
        table: str,
        table_kind: str,
        storage_endpoint: str | None,
        exactly_once: bool,
    ) -> None:
        self.table = table_path(project, dataset, table)
        self._kind = table_kind
        self._endpoint = storage_endpoint
        self.exactly_once = exactly_once
        proto_descriptor(table_kind)  # unsupported schemas fail at construction, not on a worker
        self._client = None
        self._encoder: RowEncoder | None = None
        self._budget = 0

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_encoder": None}

    @property
    def default_stream(self) -> str:
        return f"{self.table}/streams/_default"

    def open(self) -> None:
        if self._client is None:
            self._client = write_client(self._endpoint)
            self._encoder = RowEncoder(self._kind)
            self._budget = MAX_REQUEST_BYTES - _REQUEST_HEADROOM_BYTES - self._encoder.descriptor.ByteSize()

    def close(self) -> None:
        if self._client is not None:
            self._client.transport.close()
            self._client = None

    # ---- one call per batch ------------------------------------------------------------------------------------

    def write(self, rows: Sequence[dict[str, Any]], stream: str | None = None, offset: int = 0) -> WriteResult:
        """Appends ``rows`` in requests under the size limit, in order; see the module docstring for the rules."""
        self.open()
        refused: list[Refusal] = []
        requests = self._requests(rows, refused)
        appended = already = 0
        if not self.exactly_once:
            stream, offset = None, 0
        elif stream is None and requests:
            # A new stream is saved in state before anything is appended to it: a retried bundle must find it.
            try:
                stream = self._with_backoff(self._create_stream)
            except api_exceptions.GoogleAPICallError as exc:
                return WriteResult(None, 0, refused + self._refuse_all(requests, exc), [], 0, 0)
            return WriteResult(stream, 0, refused, [row for request in requests for row, _ in request], 0, 0)
        index = 0
        while index < len(requests):
            request = requests[index]
            response = self._with_backoff(lambda s=stream, r=request, o=offset: self._append(s, r, o))
            if response.kind in ("written", "already_written"):
                offset += len(request) if self.exactly_once else 0
                if response.kind == "written":
                    appended += len(request)
                    fail_once(FAULT_AFTER_APPEND)
                else:
                    already += len(request)
                index += 1
                continue
            if response.kind == "stream_unusable":
                _LOG.warning("BigQuery write stream %s is unusable (%s); opening a new one", stream, response.message)
                _counter("bigquery_streams_replaced").inc()
                try:
                    stream = self._with_backoff(self._create_stream)
                except api_exceptions.GoogleAPICallError as exc:
                    refused += self._refuse_all(requests[index:], exc)
                    return WriteResult(None, 0, refused, [], appended, already)
                rest = [row for later in requests[index:] for row, _ in later]
                return WriteResult(stream, 0, refused, rest, appended, already)
            if response.kind == "failed":
                errors = [_error(response.code, response.message)]
                refused += [(row, errors) for later in requests[index:] for row, _ in later]
                return WriteResult(stream, offset, refused, [], appended, already)
            # rows_refused: the request wrote nothing; its other rows are sent again.
            bad: dict[int, list[dict[str, str]]] = {}  # one dead letter per row, with all of its errors
            for i, code, text in response.row_errors:
                if 0 <= i < len(request):
                    bad.setdefault(i, []).append(_error(code, text))
            if bad:
                refused += [(request[i][0], errors) for i, errors in sorted(bad.items())]
                good = [item for i, item in enumerate(request) if i not in bad]
            else:  # row errors that name no row of the request: the request as a whole is refused
                refused += [(row, [_error(response.code, response.message)]) for row, _ in request]
                good = []
            if self.exactly_once:
                # Not in this bundle: a retry would meet ALREADY_EXISTS at this offset without learning which rows
                # were refused. From state, a later bundle sends them the same way on every attempt.
                rest = [row for row, _ in good] + [row for later in requests[index + 1 :] for row, _ in later]
                return WriteResult(stream, offset, refused, rest, appended, already)
            if good:
                requests[index] = good
            else:
                index += 1
        return WriteResult(stream, offset, refused, [], appended, already)

    def _requests(self, rows: Iterable[dict[str, Any]], refused: list[Refusal]) -> list[list[tuple[dict, bytes]]]:
        """Rows -> requests of (row, serialized row) under the size limit; rows that cannot be sent -> ``refused``."""
        assert self._encoder is not None
        requests: list[list[tuple[dict, bytes]]] = []
        current: list[tuple[dict, bytes]] = []
        size = 0
        for row in rows:
            try:
                data = self._encoder.encode(row)
            except RowConversionError as exc:
                refused.append((row, [_error("invalid", str(exc), exc.column)]))
                continue
            cost = len(data) + _ROW_FRAMING_BYTES
            if cost > self._budget:
                message = (
                    f"the row is {len(data)} bytes as a protocol buffer; one AppendRows request holds at most "
                    f"{MAX_REQUEST_BYTES} bytes"
                )
                refused.append((row, [_error("invalid", message)]))
                continue
            if current and size + cost > self._budget:
                requests.append(current)
                current, size = [], 0
            current.append((row, data))
            size += cost
        if current:
            requests.append(current)
        return requests

    def _refuse_all(self, requests: list[list[tuple[dict, bytes]]], exc: Exception) -> list[Refusal]:
        errors = [_error(_exception_code(exc), _exception_message(exc))]
        return [(row, errors) for request in requests for row, _ in request]

    # ---- RPCs ----------------------------------------------------------------------------------------------

    def _create_stream(self) -> str:
        from google.cloud.bigquery_storage_v1 import types

        assert self._client is not None
        stream = self._client.create_write_stream(
            parent=self.table,
            write_stream=types.WriteStream(type_=types.WriteStream.Type.COMMITTED),
            retry=None,
            timeout=CALL_TIMEOUT_S,
        )
        _counter("bigquery_streams_created").inc()
        return stream.name

    def _append(self, stream: str | None, request: list[tuple[dict, bytes]], offset: int) -> _Response:
        """One AppendRows request on its own call; transient failures raise (``_with_backoff`` retries them)."""
        from google.cloud.bigquery_storage_v1 import types

        assert self._client is not None and self._encoder is not None
        name = stream or self.default_stream
        message = types.AppendRowsRequest(
            write_stream=name,
            proto_rows=types.AppendRowsRequest.ProtoData(
                writer_schema=types.ProtoSchema(proto_descriptor=self._encoder.descriptor),
                rows=types.ProtoRows(serialized_rows=[data for _, data in request]),
            ),
        )
        if stream is not None:
            message.offset = offset
        try:
            responses = list(
                self._client.append_rows(
                    iter([message]),
                    retry=None,
                    timeout=CALL_TIMEOUT_S,
                    # The routing header BigQuery requires on AppendRows (what the library's AppendRowsStream sends).
                    metadata=(("x-goog-request-params", f"write_stream={name}"),),
                )
            )
        except api_exceptions.GoogleAPICallError as exc:
            code = _exception_code(exc)
            if code in _TRANSIENT_CODES:
                raise
            return self._request_or_stream_error(stream, code, _exception_message(exc))
        if not responses:
            raise api_exceptions.ServiceUnavailable("AppendRows ended without a response")
        response = responses[0]
        if "error" not in response:
            return _Response("written")
        code = _CODE_NAMES.get(response.error.code, str(response.error.code))
        text = response.error.message
        if code == "ALREADY_EXISTS" and stream is not None:
            # This very request (same rows, same offset) was stored by an earlier attempt.
            _counter("bigquery_rows_already_written").inc(len(request))
            return _Response("already_written", code=code, message=text)
        if response.row_errors:
            errors = [(e.index, types.RowError.RowErrorCode(e.code).name, e.message) for e in response.row_errors]
            return _Response("rows_refused", row_errors=errors, code=code, message=text)
        if code in _TRANSIENT_CODES:
            raise api_exceptions.from_grpc_status(_grpc_code(code), text)
        return self._request_or_stream_error(stream, code, text)

    def _request_or_stream_error(self, stream: str | None, code: str, text: str) -> _Response:
        """A permanent error: about the stream (a new one takes the rows) or about the request (its rows refused).

        OUT_OF_RANGE (the offset in state is beyond the stream's end) always means the stream: its rows are not at
        fault, and only a new stream has a known end.
        """
        if stream is not None and (
            code == "OUT_OF_RANGE" or (code in _STREAM_SUSPECT_CODES and not self._stream_usable(stream))
        ):
            return _Response("stream_unusable", code=code, message=text)
        return _Response("failed", code=code, message=text)

    def _stream_usable(self, stream: str) -> bool:
        """GetWriteStream decides whether an error was about the stream (gone or finalized) or the request."""
        assert self._client is not None
        try:
            found = self._client.get_write_stream(name=stream, retry=None, timeout=CALL_TIMEOUT_S)
        except api_exceptions.GoogleAPICallError as exc:
            if _exception_code(exc) in _TRANSIENT_CODES:
                raise
            return False
        return not found.finalize_time

    def _with_backoff(self, call: Callable[[], Any]) -> Any:
        """``call()``, retried on transient errors with fuzzed exponential backoff; bounded, then it raises."""
        delays = iter(FuzzedExponentialIntervals(RETRY_INITIAL_S, RETRY_ATTEMPTS - 1, max_delay_secs=RETRY_MAX_DELAY_S))
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except api_exceptions.GoogleAPICallError as exc:
                if _exception_code(exc) not in _TRANSIENT_CODES:
                    raise
                delay = next(delays, None)
                if delay is None:
                    raise StorageWriteUnavailable(
                        f"BigQuery Storage Write API ({self._endpoint or 'Google'}, {self.table}): still failing "
                        f"after {attempt} attempts: {_exception_code(exc)}: {_exception_message(exc)}"
                    ) from exc
                _counter("bigquery_append_retries").inc()
                _LOG.warning("BigQuery %s: %s, retrying in %.1f s", self.table, _exception_code(exc), delay)
                time.sleep(delay)


def _exception_code(exc: Exception) -> str:
    grpc_code = getattr(exc, "grpc_status_code", None)
    if grpc_code is not None:
        return grpc_code.name
    return type(exc).__name__


def _exception_message(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


def _grpc_code(name: str):
    import grpc

    return grpc.StatusCode[name]


class _AppendRowsFn(beam.DoFn):
    """Per shard: appends each batch (after any rows left over in state) and keeps the shard's stream and offset."""

    STREAM = ReadModifyWriteStateSpec("stream", StrUtf8Coder())
    OFFSET = ReadModifyWriteStateSpec("offset", VarIntCoder())
    LEFTOVER = ReadModifyWriteStateSpec("leftover", FastPrimitivesCoder())
    # Left-over rows are sent by the shard's next batch, or by a timer: in streaming soon (processing time), and at the
    # end of the input (event time) for bounded input and replays on a simulated clock -- whichever comes first; the
    # others find nothing left. Batch pipelines get no processing-time timer: the FnApiRunner refuses to finish with
    # one set by a timer callback after the end of the input ("time-pending bundles did not execute").
    RESUME = TimerSpec("resume", TimeDomain.REAL_TIME)
    RESUME_AT_END = TimerSpec("resume_at_end", TimeDomain.WATERMARK)

    def __init__(self, writer: StorageWriter, destination: str, streaming: bool) -> None:
        self._writer = writer
        self._destination = destination
        self._streaming = streaming

    def setup(self) -> None:
        self._writer.open()

    def teardown(self) -> None:
        self._writer.close()

    def process(
        self,
        element: tuple[int, Iterable[dict[str, Any]]],
        window=beam.DoFn.WindowParam,
        stream=beam.DoFn.StateParam(STREAM),
        offset=beam.DoFn.StateParam(OFFSET),
        leftover=beam.DoFn.StateParam(LEFTOVER),
        resume=beam.DoFn.TimerParam(RESUME),
        resume_at_end=beam.DoFn.TimerParam(RESUME_AT_END),
    ):
        rows = [*(leftover.read() or ()), *element[1]]
        yield from self._write(rows, window, stream, offset, leftover, resume, resume_at_end)

    @on_timer(RESUME)
    def on_resume(
        self,
        window=beam.DoFn.WindowParam,
        stream=beam.DoFn.StateParam(STREAM),
        offset=beam.DoFn.StateParam(OFFSET),
        leftover=beam.DoFn.StateParam(LEFTOVER),
        resume=beam.DoFn.TimerParam(RESUME),
        resume_at_end=beam.DoFn.TimerParam(RESUME_AT_END),
    ):
        yield from self._write(list(leftover.read() or ()), window, stream, offset, leftover, resume, resume_at_end)

    @on_timer(RESUME_AT_END)
    def on_resume_at_end(
        self,
        window=beam.DoFn.WindowParam,
        stream=beam.DoFn.StateParam(STREAM),
        offset=beam.DoFn.StateParam(OFFSET),
        leftover=beam.DoFn.StateParam(LEFTOVER),
        resume=beam.DoFn.TimerParam(RESUME),
        resume_at_end=beam.DoFn.TimerParam(RESUME_AT_END),
    ):
        yield from self._write(list(leftover.read() or ()), window, stream, offset, leftover, resume, resume_at_end)

    def _write(self, rows, window, stream, offset, leftover, resume, resume_at_end):
        if not rows:
            return
        result = self._writer.write(rows, stream.read() or None, offset.read() or 0)
        if self._writer.exactly_once:
            if result.stream:
                stream.write(result.stream)
            else:
                stream.clear()
            offset.write(result.offset)
        if result.leftover:
            leftover.write(result.leftover)
            if self._streaming:
                resume.set(Timestamp.now() + RESUME_DELAY_S)
            resume_at_end.set(window.max_timestamp())
        else:
            leftover.clear()
        if result.appended:
            _counter("bigquery_rows_appended").inc(result.appended)
        for row, errors in result.refused:
            yield (self._destination, row, errors)


class WriteToBigQueryStorage(beam.PTransform):
    """Rows (global window) -> a table through the Storage Write API; ``(table, row, errors)`` per refused row out."""

    def __init__(
        self,
        project: str,
        dataset: str,
        table: str,
        table_kind: str,
        storage_endpoint: str | None,
        exactly_once: bool,
        streaming: bool,
    ) -> None:
        super().__init__()
        self._writer = StorageWriter(project, dataset, table, table_kind, storage_endpoint, exactly_once)
        self._destination = f"{project}.{dataset}.{table}"
        self._streaming = streaming

    def expand(self, rows):
        return (
            rows
            | "Shard"
            >> beam.Map(lambda row: (random.randrange(SHARDS), row)).with_output_types(
                beam.typehints.KV[int, beam.typehints.Any]
            )
            # Bounded input is flushed by the end-of-window timer; a processing-time timer left set there makes the
            # FnApiRunner refuse to finish ("time-pending bundles did not execute"), as for _AppendRowsFn.RESUME.
            | "Batch"
            >> beam.GroupIntoBatches(BATCH_ROWS, max_buffering_duration_secs=BATCH_WAIT_S if self._streaming else 0)
            | "Append" >> beam.ParDo(_AppendRowsFn(self._writer, self._destination, self._streaming))
        )
