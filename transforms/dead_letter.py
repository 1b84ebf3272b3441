"""Dead-letter records: every rejected input becomes exactly one of these, with a precise error code.

A dead letter is a JSON-ready dict with the fields of ``schemas/dead_letter.bq.json``; the original bytes are
kept (base64 in JSON) so a record can be replayed once the cause is fixed.
"""

from __future__ import annotations

import base64
import re
from typing import Any, NamedTuple

from transforms.timefmt import format_rfc3339_us, now_us

# Error codes, in the order they are checked (contract v1).
PAYLOAD_TOO_LARGE = "payload_too_large"
INVALID_ENCODING = "invalid_encoding"
MALFORMED_JSON = "malformed_json"
MALFORMED_AVRO = "malformed_avro"
INCOMPATIBLE_SCHEMA = "incompatible_schema"
NOT_AN_OBJECT = "not_an_object"
MISSING_FIELD = "missing_field"
INVALID_TYPE = "invalid_type"
INVALID_VALUE = "invalid_value"
TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
# Later stages.
TOO_LATE = "too_late"
PROCESSING_ERROR = "processing_error"
WRITE_REJECTED = "write_rejected"

ERROR_CODES = (
    PAYLOAD_TOO_LARGE,
    INVALID_ENCODING,
    MALFORMED_JSON,
    MALFORMED_AVRO,
    INCOMPATIBLE_SCHEMA,
    NOT_AN_OBJECT,
    MISSING_FIELD,
    INVALID_TYPE,
    INVALID_VALUE,
    TIMESTAMP_OUT_OF_RANGE,
    TOO_LATE,
    PROCESSING_ERROR,
    WRITE_REJECTED,
)

# Stages: the step that produced the dead letter, in pipeline order.
STAGE_PARSE = "parse"
STAGE_VALIDATE = "validate"
STAGE_EVENT_TIME = "event_time"
STAGE_DEDUP = "dedup"
STAGE_WINDOW = "window"
STAGE_WRITE = "write"
STAGES = (STAGE_PARSE, STAGE_VALIDATE, STAGE_EVENT_TIME, STAGE_DEDUP, STAGE_WINDOW, STAGE_WRITE)

MAX_MESSAGE_CHARS = 1000

# An object's default repr inside an exception message: its memory address would make dead letters differ run to run.
_OBJECT_REPR = re.compile(r"\s*(?:from\s+)?<[^<>]* at 0x[0-9a-fA-F]+>")

DEAD_LETTER_TAG = "dead_letter"


class Rejection(NamedTuple):
    """Why a record was rejected; turned into a dead letter by the transform that found it."""

    code: str
    field: str | None
    message: str


def dead_letter(
    rejection: Rejection,
    payload: bytes | None,
    source: str | None,
    metadata: dict[str, Any] | None,
    stage: str,
    failed_at_us: int | None = None,
) -> dict[str, Any]:
    """Builds the dead-letter row for a rejected record."""
    return {
        "error_code": rejection.code,
        "error_field": rejection.field,
        "error_message": rejection.message,
        "payload": base64.b64encode(payload).decode("ascii") if payload is not None else None,
        "source": source,
        "source_metadata": metadata,
        "stage": stage,
        "failed_at": format_rfc3339_us(now_us() if failed_at_us is None else failed_at_us),
    }


def without_addresses(text: str) -> str:
    """``text`` minus object reprs with memory addresses (``<... at 0x7f..>``), so messages are deterministic."""
    return _OBJECT_REPR.sub("", text)


def exception_text(exc: BaseException, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``Type: message`` of an exception, without memory addresses, at most ``limit`` characters."""
    return f"{type(exc).__name__}: {without_addresses(str(exc))}"[:limit]


def original_payload(row: dict[str, Any]) -> bytes | None:
    """The original bytes of a dead-letter row (inverse of the base64 in ``dead_letter``)."""
    encoded = row.get("payload")
    return None if encoded is None else base64.b64decode(encoded)
