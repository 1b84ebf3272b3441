"""Does a Kafka topic exist, and does a broker answer? Asked before a job starts, over Kafka's own protocol.

The pipeline's Kafka client is Java (KafkaIO, in the runner's Java worker); the launcher has none, and adding one to
the job's dependencies only for this question would be heavy. The question is small: connect to a bootstrap server
the way the pipeline will (plaintext, TLS with the given CA and client certificate, SASL PLAIN or SCRAM), send one
Metadata request (version 4: Kafka 1.0 and later, still served by Kafka 4) for the topic, and read the topic's error
code. Every socket operation has a timeout.

Protocol reference: https://kafka.apache.org/protocol (request header v1, Metadata v4, SaslHandshake v1,
SaslAuthenticate v0); SCRAM: RFC 5802 and RFC 7677, as Kafka implements them (KIP-84).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import socket
import ssl
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

_METADATA, _SASL_HANDSHAKE, _SASL_AUTHENTICATE = 3, 17, 36
_CLIENT_ID = b"realtime-analytics-startup-check"
_ERRORS = {
    3: "does not exist",  # UNKNOWN_TOPIC_OR_PARTITION
    17: "is not a valid topic name",  # INVALID_TOPIC_EXCEPTION
    29: "is not readable by this user (TOPIC_AUTHORIZATION_FAILED)",
}
_FINE = (0, 5)  # NONE, LEADER_NOT_AVAILABLE (a topic being created exists)


class KafkaProbeError(Exception):
    """The broker did not answer as needed; the message says what happened."""


@dataclass(frozen=True)
class ClientSecurity:
    """How to connect: the pipeline's own settings, with secrets resolved (they never leave this process)."""

    protocol: str = "PLAINTEXT"
    ca_pem: str | None = None
    client_cert_pem: str | None = None
    client_key_pem: str | None = None
    sasl_mechanism: str | None = None
    username: str | None = None
    password: str | None = None


def _string(text: str | bytes | None) -> bytes:
    if text is None:
        return struct.pack(">h", -1)
    data = text.encode() if isinstance(text, str) else text
    return struct.pack(">h", len(data)) + data


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data, self._at = data, 0

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self._data, self._at)
        self._at += struct.calcsize(fmt)
        return values[0] if len(values) == 1 else values

    def string(self) -> str | None:
        length = self.take(">h")
        if length < 0:
            return None
        value = self._data[self._at : self._at + length].decode("utf-8", "replace")
        self._at += length
        return value

    def bytes_(self) -> bytes | None:
        length = self.take(">i")
        if length < 0:
            return None
        value = self._data[self._at : self._at + length]
        self._at += length
        return value


class _Connection:
    def __init__(self, server: str, security: ClientSecurity, timeout_s: float) -> None:
        host, _, port = server.rpartition(":")
        host = host.strip("[]")
        self._correlation = 0
        raw = socket.create_connection((host, int(port)), timeout=timeout_s)
        raw.settimeout(timeout_s)
        self._socket: socket.socket = raw
        if security.protocol in ("SSL", "SASL_SSL"):
            self._socket = _tls_context(security).wrap_socket(raw, server_hostname=host)
        if security.protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            self._authenticate(security)

    def close(self) -> None:
        self._socket.close()

    def request(self, api_key: int, version: int, body: bytes) -> _Reader:
        self._correlation += 1
        header = struct.pack(">hhi", api_key, version, self._correlation) + _string(_CLIENT_ID)
        message = header + body
        self._socket.sendall(struct.pack(">i", len(message)) + message)
        size = struct.unpack(">i", self._read(4))[0]
        reader = _Reader(self._read(size))
        if reader.take(">i") != self._correlation:
            raise KafkaProbeError("the broker answered another request (not a Kafka broker?)")
        return reader

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = self._socket.recv(min(left, 1 << 16))
            if not chunk:
                raise KafkaProbeError("the broker closed the connection (wrong security protocol or listener?)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def _authenticate(self, security: ClientSecurity) -> None:
        mechanism = security.sasl_mechanism or "SCRAM-SHA-512"
        answer = self.request(_SASL_HANDSHAKE, 1, _string(mechanism))
        error = answer.take(">h")
        if error:
            enabled = [answer.string() for _ in range(max(answer.take(">i"), 0))]
            raise KafkaProbeError(f"the broker does not accept SASL {mechanism} (it offers {', '.join(enabled)})")
        if mechanism == "PLAIN":
            self._sasl_step(b"\0" + (security.username or "").encode() + b"\0" + (security.password or "").encode())
            return
        _Scram(mechanism, security.username or "", security.password or "").run(self._sasl_step)

    def _sasl_step(self, token: bytes) -> bytes:
        answer = self.request(_SASL_AUTHENTICATE, 0, struct.pack(">i", len(token)) + token)
        error, message = answer.take(">h"), answer.string()
        if error:
            raise KafkaProbeError(f"SASL authentication failed: {message or f'error {error}'}")
        return answer.bytes_() or b""


class _Scram:
    """The client side of SCRAM-SHA-256/512 (RFC 5802), as Kafka's ScramSaslServer expects it."""

    def __init__(self, mechanism: str, username: str, password: str) -> None:
        self._hash = hashlib.sha512 if mechanism.endswith("512") else hashlib.sha256
        self._name = self._hash().name
        self._user = username.replace("=", "=3D").replace(",", "=2C")
        self._password = password.encode()

    def _hmac(self, key: bytes, message: bytes) -> bytes:
        return hmac.new(key, message, self._hash).digest()

    def run(self, step) -> None:
        nonce = base64.b64encode(secrets.token_bytes(24)).decode()
        first_bare = f"n={self._user},r={nonce}"
        server_first = step(f"n,,{first_bare}".encode()).decode()
        fields = dict(item.split("=", 1) for item in server_first.split(","))
        if not fields.get("r", "").startswith(nonce):
            raise KafkaProbeError("SASL SCRAM: the broker's nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac(self._name, self._password, base64.b64decode(fields["s"]), int(fields["i"]))
        client_key = self._hmac(salted, b"Client Key")
        final_bare = f"c=biws,r={fields['r']}"
        auth_message = f"{first_bare},{server_first},{final_bare}".encode()
        signature = self._hmac(self._hash(client_key).digest(), auth_message)
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature, strict=True))).decode()
        server_final = step(f"{final_bare},p={proof}".encode()).decode()
        expected = base64.b64encode(self._hmac(self._hmac(salted, b"Server Key"), auth_message)).decode()
        if server_final != f"v={expected}":
            raise KafkaProbeError("SASL SCRAM: the broker's final message does not prove it knows the password")


def _tls_context(security: ClientSecurity) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=security.ca_pem) if security.ca_pem else ssl.create_default_context()
    if security.client_cert_pem and security.client_key_pem:
        # The ssl module loads a key pair from files only: a private temporary directory, removed at once.
        with tempfile.TemporaryDirectory(prefix="kafka-probe-") as directory:
            cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
            for path, pem in ((cert, security.client_cert_pem), (key, security.client_key_pem)):
                with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as handle:
                    handle.write(pem)
            context.load_cert_chain(cert, key)
    return context


def topic_problem(servers: Sequence[str], topic: str, security: ClientSecurity, timeout_s: float = 5.0) -> str | None:
    """None if a broker of ``servers`` answers and ``topic`` exists; otherwise what went wrong, in a few words."""
    failures = []
    for server in servers:
        try:
            connection = _Connection(server, security, timeout_s)
        except (OSError, KafkaProbeError) as exc:
            failures.append(f"{server}: {_reason(exc)}")
            continue
        try:
            body = struct.pack(">i", 1) + _string(topic) + struct.pack(">b", 0)  # no auto-creation
            answer = connection.request(_METADATA, 4, body)
            answer.take(">i")  # throttle time
            for _ in range(answer.take(">i")):  # brokers
                answer.take(">i")
                answer.string()
                answer.take(">i")
                answer.string()
            answer.string()  # cluster id
            answer.take(">i")  # controller id
            if answer.take(">i") < 1:
                return f"the broker at {server} returned no metadata for topic {topic!r}"
            error = answer.take(">h")
        except (OSError, KafkaProbeError, struct.error) as exc:
            failures.append(f"{server}: {_reason(exc)}")
            continue
        finally:
            connection.close()
        if error in _FINE:
            return None
        return f"topic {topic!r} {_ERRORS.get(error, f'cannot be read (Kafka error {error})')} on {server}"
    return f"no Kafka broker answered ({'; '.join(failures)})"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "no answer (timed out)"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {exc.reason or exc}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
