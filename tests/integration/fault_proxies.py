"""Fault-injecting proxies that sit between the pipeline and a real local service (the service itself stays real).

- ``BigQueryFaultProxy``: a threaded HTTP reverse proxy in front of the BigQuery emulator. While a fault mode is
  on it disturbs ``tabledata.insertAll`` calls:
  ``outage``: nothing reaches BigQuery; each call is answered, in turn, with a 503 (``backendError``), a reset
  connection, or a 200 whose every row carries a transient ``backendError`` (Beam's own per-row retry path);
  ``lost_ack``: the call reaches BigQuery (the rows are stored), then the answer is lost (a 500, or a reset
  connection) the first time each distinct request is seen, as when BigQuery fails after committing.
- ``PubSubFaultProxy``: a gRPC proxy in front of the Pub/Sub emulator. It forwards every unary call as raw bytes;
  while ``drop_acks`` is on it answers ``Acknowledge`` with OK without forwarding it, so the emulator redelivers
  those messages when their ack deadline expires, exactly as after a lost ack. It counts how often each message
  id was delivered through ``Pull`` and how often an ``Acknowledge`` for it reached the emulator.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
from collections import Counter
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.pubsub_v1.types import AcknowledgeRequest, PullResponse

OUTAGE = "outage"
LOST_ACK = "lost_ack"
OUTAGE_FAULTS = ("http_503", "connection_reset", "row_backend_errors")
LOST_ACK_FAULTS = ("stored_then_http_500", "stored_then_connection_reset")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
}


def _error_body(code: int, status: str) -> bytes:
    message = f"fault injected by the test proxy ({code})"
    return json.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "status": status,
                "errors": [{"reason": "backendError", "message": message}],
            }
        }
    ).encode()


class BigQueryFaultProxy:
    """HTTP reverse proxy to ``upstream`` (the emulator's REST endpoint) on a free 127.0.0.1 port."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self._lock = threading.Lock()
        self._mode: str | None = None
        self._turn = 0
        self._lost: set[tuple] = set()
        self.insert_calls = 0
        self.insert_calls_passed = 0
        self.faults: Counter = Counter()  # fault kind -> calls
        self.fault_rows: Counter = Counter()  # fault kind -> rows in those calls
        self.forwarded_ids: Counter = Counter()  # insertId -> times it reached BigQuery
        proxy = self

        class Handler(_RelayHandler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="bigquery-fault-proxy", daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> BigQueryFaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def set_mode(self, mode: str | None) -> None:
        with self._lock:
            self._mode = mode

    @property
    def ids_stored_more_than_once(self) -> int:
        """Insert ids that reached BigQuery more than once (retries of calls whose answer was lost)."""
        with self._lock:
            return sum(1 for n in self.forwarded_ids.values() if n > 1)

    def decide(self, method: str, path: str, body: bytes) -> tuple[str | None, tuple]:
        """(fault to inject or None, the call's insert ids) for one request."""
        if method != "POST" or not path.split("?")[0].endswith("/insertAll"):
            return None, ()
        rows = json.loads(body or b"{}").get("rows") or []
        ids = tuple(row.get("insertId") for row in rows)
        with self._lock:
            self.insert_calls += 1
            fault = None
            if self._mode == OUTAGE:
                fault = OUTAGE_FAULTS[self._turn % len(OUTAGE_FAULTS)]
                self._turn += 1
            elif self._mode == LOST_ACK and ids not in self._lost:
                self._lost.add(ids)
                fault = LOST_ACK_FAULTS[self._turn % len(LOST_ACK_FAULTS)]
                self._turn += 1
            if fault is None:
                self.insert_calls_passed += 1
            else:
                self.faults[fault] += 1
                self.fault_rows[fault] += len(rows)
            return fault, ids

    def forwarded(self, ids: tuple) -> None:
        with self._lock:
            self.forwarded_ids.update(i for i in ids if i)

    def upstream_connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(*self._upstream, timeout=120)


class _RelayHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as google-cloud-bigquery's session expects
    owner: BigQueryFaultProxy

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        pass

    def do_POST(self) -> None:
        self._relay()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault, ids = self.owner.decide(self.command, self.path, body)
        if fault == "http_503":
            return self._send(503, [("Content-Type", "application/json")], _error_body(503, "UNAVAILABLE"))
        if fault == "connection_reset":
            return self._reset()
        if fault == "row_backend_errors":
            errors = [
                {"index": i, "errors": [{"reason": "backendError", "location": "", "message": "fault injected"}]}
                for i in range(len(ids))
            ]
            payload = json.dumps({"kind": "bigquery#tableDataInsertAllResponse", "insertErrors": errors}).encode()
            return self._send(200, [("Content-Type", "application/json")], payload)
        status, headers, data = self._forward(body)
        if ids and status == 200:
            self.owner.forwarded(ids)
        if fault == "stored_then_http_500":
            return self._send(500, [("Content-Type", "application/json")], _error_body(500, "INTERNAL"))
        if fault == "stored_then_connection_reset":
            return self._reset()
        return self._send(status, headers, data)

    def _forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
        connection = self.owner.upstream_connection()
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            connection.request(self.command, self.path, body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
            return response.status, kept, data
        finally:
            connection.close()

    def _send(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        # SO_LINGER 0: closing sends a TCP reset; the client sees the connection drop with no answer.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True


_ACKNOWLEDGE = "/google.pubsub.v1.Subscriber/Acknowledge"
_PULL = "/google.pubsub.v1.Subscriber/Pull"


class PubSubFaultProxy:
    """gRPC proxy to ``upstream`` (HOST:PORT of the Pub/Sub emulator) on a free 127.0.0.1 port (unary calls)."""

    def __init__(self, upstream: str) -> None:
        self._channel = grpc.insecure_channel(upstream)
        self._lock = threading.Lock()
        self._drop_acks = False
        self.acks_dropped = 0
        self.deliveries: Counter = Counter()  # message id -> times delivered through Pull
        self.acked: Counter = Counter()  # message id -> Acknowledge calls forwarded for it
        self.pulls = 0  # Pull calls answered
        self.data: dict[str, bytes] = {}  # message id -> its data
        self._message_of: dict[str, str] = {}  # ack id -> message id
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self._server.add_generic_rpc_handlers([_Forwarder(self)])
        self._port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self._port}"

    def start(self) -> PubSubFaultProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None)
        self._channel.close()

    def drop_acks(self, on: bool) -> None:
        with self._lock:
            self._drop_acks = on

    @property
    def redelivered(self) -> int:
        """Deliveries beyond the first of each message: what the pipeline saw again."""
        with self._lock:
            return sum(n - 1 for n in self.deliveries.values())

    def redelivered_of(self, payloads: set[bytes]) -> int:
        """Redeliveries of the messages whose data is one of ``payloads``."""
        with self._lock:
            return sum(n - 1 for i, n in self.deliveries.items() if self.data[i] in payloads)

    @property
    def delivered(self) -> int:
        with self._lock:
            return sum(self.deliveries.values())

    def call(self, method: str, request: bytes, context: grpc.ServicerContext) -> bytes:
        if method == _ACKNOWLEDGE:
            with self._lock:
                if self._drop_acks:
                    self.acks_dropped += len(AcknowledgeRequest.deserialize(request).ack_ids)
                    return b""  # google.protobuf.Empty
        metadata = [(k, v) for k, v in context.invocation_metadata() if not k.startswith((":", "grpc-", "user-agent"))]
        remaining = context.time_remaining()
        try:
            response = self._channel.unary_unary(method)(request, timeout=remaining, metadata=metadata)
        except grpc.RpcError as exc:
            context.abort(exc.code(), exc.details())
        if method == _PULL:
            received = PullResponse.deserialize(response).received_messages
            with self._lock:
                self.pulls += 1
                self.deliveries.update(r.message.message_id for r in received)
                self.data.update((r.message.message_id, r.message.data) for r in received)
                self._message_of.update((r.ack_id, r.message.message_id) for r in received)
        elif method == _ACKNOWLEDGE:
            with self._lock:
                ack_ids = AcknowledgeRequest.deserialize(request).ack_ids
                self.acked.update(self._message_of[a] for a in ack_ids if a in self._message_of)
        return response


class _Forwarder(grpc.GenericRpcHandler):
    def __init__(self, proxy: PubSubFaultProxy) -> None:
        self._proxy = proxy

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method.endswith("/StreamingPull"):
            return None  # not forwarded (UNIMPLEMENTED): Beam's direct runner pulls with unary Pull
        return grpc.unary_unary_rpc_method_handler(lambda request, context: self._proxy.call(method, request, context))
