"""``--pseudonymize_user_id``: keyed HMAC-SHA256 of ``user_id`` before anything leaves the pipeline.

A pseudonym is ``HMAC-SHA256(key, UTF-8 bytes of user_id)`` as 64 lowercase hex characters. The same user always
gets the same pseudonym under the same key, different users different ones (a collision needs ~2^128 users), so
deduplication, grouping and the HLL++ distinct counts work on pseudonyms exactly as on the raw ids. Without the
key a pseudonym cannot be computed from a guessed id (unlike a plain hash, which anyone can recompute for a list of
e-mail addresses). The key is resolved from its secret reference in each worker's ``setup``: the graph holds only
the reference.

Where a raw id could leave the pipeline, and what happens to it:

- valid events (``PseudonymizeEvents``, right after validation): ``user_id`` and, with ``--key_field=user_id``, the
  grouping key are replaced; aggregates and their sketches only ever see pseudonyms;
- dead letters (``PseudonymizeDeadLetters``, on every dead letter of the analytics graph): the original payload is
  decoded; if that works its ``user_id`` (whatever its type) is replaced by the pseudonym and the record re-encoded
  in its own format (JSON: compact orjson; Avro and Confluent Avro: the same writer schema and header); if the
  payload cannot be decoded (malformed, wrong encoding, too large) it is withheld (``payload`` null), because a
  ``user_id`` inside it could not be found reliably. A Kafka record key is replaced by its pseudonym too (producers
  often key by user). ``source_metadata.pseudonymized`` lists what was replaced, ``payload_withheld`` says why a
  payload is missing. Offsets, partitions, message ids and the error stay, so the record can still be found at its
  source.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import fastavro
import orjson

import schemas
from transforms import dead_letter as dl
from transforms import metrics
from transforms.fast_json import Valid
from transforms.parse import FORMAT_AVRO, FORMAT_CONFLUENT_AVRO, FORMAT_JSON
from transforms.parse_validate import ValidBatch
from transforms.secrets import SecretError, parse_secret_ref, resolve_secret

USER_ID = "user_id"
# RFC 2104: keys shorter than the hash output (32 bytes for SHA-256) weaken HMAC.
MIN_KEY_BYTES = 32

PAYLOAD_FIELD = "payload.user_id"
KEY_FIELD = "key"
WITHHELD_UNDECODABLE = "not decodable, so its user_id could not be pseudonymized"

_CONFLUENT_HEADER = 5


def load_key(reference: str) -> bytes:
    """The HMAC key from its secret reference; ValueError (SecretError or too short) naming the reference."""
    ref = parse_secret_ref(reference)
    key = resolve_secret(ref)
    if len(key) < MIN_KEY_BYTES:
        raise SecretError(
            f"{ref} holds {len(key)} bytes; an HMAC-SHA256 key needs at least {MIN_KEY_BYTES} "
            "(e.g. openssl rand -base64 48)"
        )
    return key


class Pseudonymizer:
    """HMAC-SHA256 pseudonyms under one key, and the rewriting of events and dead letters."""

    def __init__(self, key: bytes, fmt: str = FORMAT_JSON) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"an HMAC-SHA256 key needs at least {MIN_KEY_BYTES} bytes")
        self._mac = hmac.new(key, digestmod=hashlib.sha256)
        self._format = fmt
        self._confluent = schemas.confluent_schemas() if fmt == FORMAT_CONFLUENT_AVRO else {}

    def pseudonym(self, user_id: str) -> str:
        mac = self._mac.copy()  # the keyed inner/outer state is computed once; copies are cheap
        mac.update(user_id.encode("utf-8"))
        return mac.hexdigest()

    def _value_pseudonym(self, value: Any) -> str:
        # A user_id of the wrong type (a dead letter's reason, often) is an identifier all the same.
        return self.pseudonym(value if type(value) is str else orjson.dumps(value).decode("utf-8"))

    def valid(self, valid: list[Valid], key_is_user_id: bool) -> list[Valid]:
        """Valid events (``fast_json.Valid``) with their user_id (and a user_id key) pseudonymized."""
        pseudonym = self.pseudonym
        if key_is_user_id:
            return [(*v[:3], p, *v[4:8], p) for v in valid for p in (pseudonym(v[3]),)]
        return [(*v[:3], pseudonym(v[3]), *v[4:]) for v in valid]

    def payload(self, payload: bytes) -> bytes | None:
        """The payload with its user_id pseudonymized (unchanged if it has none); None if it cannot be decoded."""
        try:
            if self._format == FORMAT_JSON:
                return self._json(payload)
            if self._format == FORMAT_AVRO:
                return self._avro(payload, schemas.event_avro_schema())
            if self._format == FORMAT_CONFLUENT_AVRO:
                if len(payload) < _CONFLUENT_HEADER or payload[0] != 0:
                    return None
                schema = self._confluent.get(int.from_bytes(payload[1:_CONFLUENT_HEADER], "big"))
                if schema is None:
                    return None
                body = self._avro(payload[_CONFLUENT_HEADER:], schema)
                return None if body is None else payload[:_CONFLUENT_HEADER] + body
        except Exception:  # noqa: BLE001 - any decoder failure means: cannot rewrite, withhold
            return None
        return None

    def _json(self, payload: bytes) -> bytes | None:
        obj = orjson.loads(payload)
        if type(obj) is not dict:
            return None  # an array or a bare string may well be (or hold) an id: nothing to point at, withhold
        if USER_ID in obj:
            obj[USER_ID] = self._value_pseudonym(obj[USER_ID])
            return orjson.dumps(obj)
        return payload

    def _avro(self, payload: bytes, schema: dict[str, Any]) -> bytes | None:
        buffer = io.BytesIO(payload)
        obj = fastavro.schemaless_reader(buffer, schema, None)
        if buffer.tell() != len(payload) or not isinstance(obj, dict):
            return None
        if USER_ID not in obj:
            return payload
        obj[USER_ID] = self._value_pseudonym(obj[USER_ID])
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, obj)
        return out.getvalue()

    def dead_letter(self, row: dict[str, Any]) -> dict[str, Any]:
        """The dead letter with its payload's user_id and a Kafka record key pseudonymized (or the payload withheld)."""
        out = dict(row)
        metadata = dict(row.get("source_metadata") or {})
        replaced = []
        original = dl.original_payload(row)
        if original is not None:
            rewritten = self.payload(original)
            if rewritten is None:
                out["payload"] = None
                metadata["payload_withheld"] = WITHHELD_UNDECODABLE
            else:
                out["payload"] = base64.b64encode(rewritten).decode("ascii")
                if rewritten != original:
                    replaced.append(PAYLOAD_FIELD)
        if isinstance(metadata.get(KEY_FIELD), str):  # a Kafka record key (text, or base64:...)
            metadata[KEY_FIELD] = self.pseudonym(metadata[KEY_FIELD])
            replaced.append(KEY_FIELD)
        if replaced:
            metadata["pseudonymized"] = replaced
        out["source_metadata"] = metadata or row.get("source_metadata")
        return out


class _PseudonymizeDoFn(beam.DoFn):
    """Resolves the key once per worker (``setup``): the graph carries only the reference."""

    def __init__(self, key_reference: str, fmt: str, key_is_user_id: bool = False) -> None:
        self._key_reference = key_reference
        self._format = fmt
        self._key_is_user_id = key_is_user_id
        self._pseudonymizer: Pseudonymizer | None = None

    def setup(self) -> None:
        self._pseudonymizer = Pseudonymizer(load_key(self._key_reference), self._format)

    def teardown(self) -> None:
        self._pseudonymizer = None


class _EventsDoFn(_PseudonymizeDoFn):
    def process(self, checked: ValidBatch) -> Iterator[ValidBatch]:
        yield ValidBatch(checked.batch, self._pseudonymizer.valid(checked.valid, self._key_is_user_id))


class _DeadLettersDoFn(_PseudonymizeDoFn):
    def __init__(self, key_reference: str, fmt: str) -> None:
        super().__init__(key_reference, fmt)
        self._withheld = metrics.counter(metrics.DEAD_LETTER_PAYLOADS_WITHHELD)

    def process(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        out = self._pseudonymizer.dead_letter(row)
        if out.get("payload") is None and row.get("payload") is not None:
            self._withheld.inc()
        yield out


class PseudonymizeEvents(beam.PTransform):
    """ValidBatches -> the same with ``user_id`` (and a ``user_id`` grouping key) replaced by its pseudonym."""

    def __init__(self, key_reference: str, key_field: str = "page", fmt: str = FORMAT_JSON) -> None:
        super().__init__()
        parse_secret_ref(key_reference)  # a malformed reference fails at construction, not on the workers
        self._dofn = _EventsDoFn(key_reference, fmt, key_is_user_id=key_field == USER_ID)

    def expand(self, events):
        return events | "Hmac" >> beam.ParDo(self._dofn).with_output_types(ValidBatch)


class PseudonymizeDeadLetters(beam.PTransform):
    """Dead-letter rows -> the same rows with the payload's ``user_id`` and a Kafka key pseudonymized (see module)."""

    def __init__(self, key_reference: str, fmt: str = FORMAT_JSON) -> None:
        super().__init__()
        parse_secret_ref(key_reference)
        self._dofn = _DeadLettersDoFn(key_reference, fmt)

    def expand(self, rows):
        return rows | "Hmac" >> beam.ParDo(self._dofn)


__all__ = [
    "MIN_KEY_BYTES",
    "PseudonymizeDeadLetters",
    "PseudonymizeEvents",
    "Pseudonymizer",
    "SecretError",
    "load_key",
]
