"""Validating decoded objects against the event contract v1 (see ``docs/event-contract.md``).

Checks run field by field in contract order (event_id, event_type, user_id, event_time, page, value,
properties); within a field: missing_field, invalid_type, invalid_value, then timestamp_out_of_range. The first
failing check decides the record's single error code.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

from transforms import dead_letter as dl
from transforms.dead_letter import Rejection
from transforms.records import Event, SourceRecord
from transforms.timefmt import US_PER_MS, now_us, parse_rfc3339_us

EVENT_ID_MAX = 128
USER_ID_MAX = 256
PAGE_MAX = 2048
EVENT_TYPE_PATTERN = r"[a-z][a-z0-9_]{0,63}"
MIN_EVENT_TIME_US = 946_684_800 * 1_000_000  # 2000-01-01T00:00:00Z
DEFAULT_MAX_CLOCK_SKEW_S = 24 * 3600
_MAX_FLOAT = 1.7976931348623157e308

EVENT_TYPE_REGEX = re.compile(EVENT_TYPE_PATTERN)

# Fields the contract defines, in check order; --key_field may name these, properties.<name>, or any other
# top-level field (forward compatible extras).
CONTRACT_FIELDS = ("event_id", "event_type", "user_id", "event_time", "page", "value", "properties")


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _required_string(obj: dict[str, Any], name: str, max_len: int) -> str | Rejection:
    if name not in obj:
        return Rejection(dl.MISSING_FIELD, name, f"required field '{name}' is missing")
    value = obj[name]
    if type(value) is not str:
        return Rejection(dl.INVALID_TYPE, name, f"'{name}' must be a string, got {_type_name(value)}")
    if not 1 <= len(value) <= max_len:
        return Rejection(dl.INVALID_VALUE, name, f"'{name}' must be 1-{max_len} characters, got {len(value)}")
    return value


def _event_time_us(obj: dict[str, Any], now: int, max_skew_us: int) -> int | Rejection:
    if "event_time" not in obj:
        return Rejection(dl.MISSING_FIELD, "event_time", "required field 'event_time' is missing")
    value = obj["event_time"]
    kind = type(value)
    if kind is str:
        us = parse_rfc3339_us(value)
        if us is None:
            return Rejection(
                dl.INVALID_VALUE,
                "event_time",
                f"'event_time' is not an RFC 3339 date-time with offset: {value[:64]!r}",
            )
    elif kind is int:
        us = value * US_PER_MS
    elif kind is float:
        if not math.isfinite(value) or not value.is_integer():
            return Rejection(
                dl.INVALID_VALUE,
                "event_time",
                f"'event_time' must be integer epoch milliseconds, got {value!r}",
            )
        us = int(value) * US_PER_MS
    else:
        return Rejection(
            dl.INVALID_TYPE,
            "event_time",
            f"'event_time' must be an RFC 3339 string or integer epoch milliseconds, got {_type_name(value)}",
        )
    if us < MIN_EVENT_TIME_US:
        return Rejection(dl.TIMESTAMP_OUT_OF_RANGE, "event_time", "'event_time' is before 2000-01-01T00:00:00Z")
    if us > now + max_skew_us:
        return Rejection(
            dl.TIMESTAMP_OUT_OF_RANGE,
            "event_time",
            f"'event_time' is more than {max_skew_us // 1_000_000} s ahead of processing time",
        )
    return us


def _optional_page(obj: dict[str, Any]) -> str | None | Rejection:
    value = obj.get("page")
    if value is None:
        return None
    if type(value) is not str:
        return Rejection(dl.INVALID_TYPE, "page", f"'page' must be a string or null, got {_type_name(value)}")
    if len(value) > PAGE_MAX:
        return Rejection(dl.INVALID_VALUE, "page", f"'page' must be at most {PAGE_MAX} characters, got {len(value)}")
    return value


def _optional_value(obj: dict[str, Any]) -> float | int | Rejection:
    if "value" not in obj:
        return 0
    value = obj["value"]
    kind = type(value)
    if kind is int:
        if abs(value) > _MAX_FLOAT:
            return Rejection(dl.INVALID_VALUE, "value", "'value' is too large for a double")
        return value
    if kind is float:
        if not math.isfinite(value):
            return Rejection(dl.INVALID_VALUE, "value", "'value' must be a finite number")
        return value
    return Rejection(dl.INVALID_TYPE, "value", f"'value' must be a number, got {_type_name(value)}")


def _optional_properties(obj: dict[str, Any]) -> dict[str, str] | None | Rejection:
    if "properties" not in obj:
        return None
    value = obj["properties"]
    if type(value) is not dict:
        return Rejection(
            dl.INVALID_TYPE,
            "properties",
            f"'properties' must be an object of strings, got {_type_name(value)}",
        )
    for name, item in value.items():
        if type(item) is not str:
            return Rejection(
                dl.INVALID_TYPE,
                "properties",
                f"'properties' values must be strings; '{str(name)[:64]}' is {_type_name(item)}",
            )
    return value


def _stringify(value: Any) -> str | None:
    if value is None or type(value) is str:
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, or nesting deeper than orjson writes (254)
        pass
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, RecursionError):  # over 4300 digits, or too deep even for the stdlib: no usable key
        return None


def key_extractor(key_field: str) -> Callable[[dict[str, Any], dict[str, str] | None], str | None]:
    """How to read the grouping key from a validated object: a field, ``properties.<name>`` or an extra field."""
    if key_field.startswith("properties."):
        prop = key_field[len("properties.") :]
        return lambda obj, props: None if props is None else props.get(prop)
    return lambda obj, props: _stringify(obj.get(key_field))


class EventValidator:
    """Turns a decoded object into an ``Event`` or a ``Rejection`` (the contract's checks, in order)."""

    def __init__(
        self,
        key_field: str = "page",
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self._key_of = key_extractor(key_field)
        self._max_skew_us = int(max_clock_skew_s * 1_000_000)
        self._clock = clock

    def validate(self, obj: dict[str, Any], record: SourceRecord, arrival_us: int = 0) -> Event | Rejection:
        event_id = _required_string(obj, "event_id", EVENT_ID_MAX)
        if type(event_id) is Rejection:
            return event_id
        event_type = _required_string(obj, "event_type", 64)
        if type(event_type) is Rejection:
            if event_type.code == dl.INVALID_VALUE:
                return Rejection(dl.INVALID_VALUE, "event_type", self._event_type_message(obj["event_type"]))
            return event_type
        if EVENT_TYPE_REGEX.fullmatch(event_type) is None:
            return Rejection(dl.INVALID_VALUE, "event_type", self._event_type_message(event_type))
        user_id = _required_string(obj, "user_id", USER_ID_MAX)
        if type(user_id) is Rejection:
            return user_id
        event_time_us = _event_time_us(obj, self._clock(), self._max_skew_us)
        if type(event_time_us) is Rejection:
            return event_time_us
        page = _optional_page(obj)
        if type(page) is Rejection:
            return page
        value = _optional_value(obj)
        if type(value) is Rejection:
            return value
        properties = _optional_properties(obj)
        if type(properties) is Rejection:
            return properties
        return Event(
            event_id,
            event_type,
            user_id,
            event_time_us,
            page,
            value,
            properties,
            self._key_of(obj, properties),
            record.payload,
            record.source,
            record.metadata,
            arrival_us,
        )

    @staticmethod
    def _event_type_message(value: str) -> str:
        return f"'event_type' must match ^{EVENT_TYPE_PATTERN}$, got {value[:80]!r}"
