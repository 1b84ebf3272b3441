"""The fast path for plainly valid JSON events: compiled code does the contract's checks (a C scanner or msgspec).

The reference (``parse.decode_json`` + ``validate.EventValidator``) is exact and decides every error code, field
and message, but costs several microseconds per record in Python. Most records are plainly valid, and for those
a typed msgspec decode (types, lengths, required fields) plus a few cheap checks gives the very same event.

The rule that keeps it exact: the fast path only ever *accepts*. A record is either returned as valid, with
exactly the fields the reference would give it, or left for the reference, which then accepts or rejects it with
its usual code, field and message. Everything the fast path is not sure about goes to the reference: payloads
over the size limit or long enough to nest deeply, non-ASCII payloads that are not valid UTF-8 (msgspec does not
check fields it skips), UTF-16 surrogate escapes, integers beyond 64 bits, non-finite numbers, event types that
do not match the pattern, event times out of range or in an unusual shape, and any --key_field other than a
contract string field or ``properties.<name>``. ``tests/unit/test_fast_json.py`` checks fast path == reference
(outcome and every field) on generated near-valid records.

Two implementations of that one rule: the C scanner (``transforms/_fastjson.c``, an optional extension built by
setup.py) takes a whole batch in one call and accepts the plain shape only (ASCII strings without escapes, flat
objects, the usual event-time shapes); the msgspec path below is used where the extension is not built, and for
the records the scanner leaves (non-ASCII text, escapes...), before the reference sees them.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from transforms.records import Event
from transforms.timefmt import US_PER_MS, now_us, parse_rfc3339_us
from transforms.validate import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    EVENT_ID_MAX,
    EVENT_TYPE_PATTERN,
    EVENT_TYPE_REGEX,
    MIN_EVENT_TIME_US,
    PAGE_MAX,
    USER_ID_MAX,
)

try:
    from transforms import _fastjson
except ImportError:  # installed without a C compiler: the msgspec path does the same job, slower
    _fastjson = None

# The C scanner implements the event-type pattern by hand, so it serves only while the contract's is that one.
NATIVE = _fastjson is not None and _fastjson.EVENT_TYPE_PATTERN == EVENT_TYPE_PATTERN
# "auto": the C scanner, then msgspec for the records it leaves (msgspec alone without the extension);
# "native": the C scanner alone; "msgspec": the Python path alone (tests and benchmarks compare them).
IMPLEMENTATIONS = ("auto", "native", "msgspec")
_LOG = logging.getLogger(__name__)


@functools.cache
def _warn_not_native() -> None:
    """Once per process: the job still runs (the msgspec path), but operators should know why it is slower."""
    _LOG.warning(
        "JSON fast path: the C extension transforms/_fastjson.c is not built in this installation (no C compiler "
        "when it was installed?); using the msgspec path, which parses and validates several times slower"
    )


# Key fields the fast path reads from its typed decode; any other --key_field (an extra top-level field) goes
# through the reference, which stringifies whatever JSON value it finds there.
FAST_KEY_FIELDS = ("page", "event_id", "event_type", "user_id")
_INT64 = 2**63
# The scanner's key kinds (transforms/_fastjson.c); 4 is properties.<name>.
_NATIVE_KEY_KINDS = {name: kind for kind, name in enumerate(FAST_KEY_FIELDS)}
_NATIVE_KEY_PROPERTY = len(FAST_KEY_FIELDS)


class _PlainEvent(Struct, gc=False):
    """The contract's fields typed as a valid record has them; msgspec rejects anything else (-> reference)."""

    event_id: Annotated[str, Meta(min_length=1, max_length=EVENT_ID_MAX)]
    event_type: Annotated[str, Meta(min_length=1, max_length=64)]  # the pattern is checked (cached) in Python
    user_id: Annotated[str, Meta(min_length=1, max_length=USER_ID_MAX)]
    event_time: str | int | float
    page: Annotated[str, Meta(max_length=PAGE_MAX)] | None = None
    value: int | float = 0
    properties: dict[str, str] | UnsetType = UNSET  # JSON null is invalid_type: UNSET keeps it apart from absent


_decode_plain = msgspec.json.Decoder(_PlainEvent).decode
_DECODE_ERRORS = (msgspec.DecodeError, RecursionError)

# A payload this short cannot nest deeper than msgspec or orjson parse; a longer one is checked by counting.
_SHALLOW_BYTES = 1024
_MAX_BRACKETS = 256
_CACHE_LIMIT = 1 << 16

# One accepted record: its position in the batch, then the fields of its Event (payload and origin aside).
Valid = tuple[int, str, str, str, int, "str | None", "int | float", "dict[str, str] | None", "str | None"]


def valid_of(index: int, event: Event) -> Valid:
    """The ``Valid`` tuple of an event the reference accepted (so both paths feed the same columns)."""
    return (index, event.event_id, event.event_type, event.user_id, event.event_time_us, event.page, event.value,
            event.properties, event.key)  # fmt: skip


def _position(valid: Valid) -> int:
    return valid[0]


def event_of(valid: Valid, payload: bytes, source: str, metadata: Any = None, arrival_us: int = 0) -> Event:
    return Event(*valid[1:], payload, source, metadata, arrival_us)


class FastJsonValidator:
    """Accepts the plainly valid JSON records of a batch exactly as the reference would; leaves the rest to it."""

    def __init__(
        self,
        key_field: str = "page",
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        max_payload_bytes: int = 1 << 20,
        clock: Callable[[], int] = now_us,
        implementation: str = "auto",
    ) -> None:
        if implementation not in IMPLEMENTATIONS:
            raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}, got {implementation!r}")
        if implementation == "native" and not NATIVE:
            raise ValueError("the C fast path (transforms/_fastjson.c) is not built in this installation")
        self._max_skew_us = int(max_clock_skew_s * 1_000_000)
        self._max_payload_bytes = max_payload_bytes
        self._clock = clock
        self._seconds: dict[str, int | None] = {}
        self._event_types: dict[str, bool] = {}
        prop = key_field[len("properties.") :] if key_field.startswith("properties.") else None
        self.enabled = key_field in FAST_KEY_FIELDS or bool(prop)
        self._property = prop
        self._key_field = key_field
        self._native = NATIVE and implementation != "msgspec"
        if implementation == "auto" and not NATIVE:
            _warn_not_native()
        self._msgspec = implementation != "native"
        self._native_key = _NATIVE_KEY_KINDS.get(key_field, _NATIVE_KEY_PROPERTY)

    @property
    def native(self) -> bool:
        """Whether the C scanner takes the batches first."""
        return self._native

    def validate_batch(self, payloads: Sequence[bytes]) -> tuple[list[Valid], list[int]]:
        """(the records it accepts, the positions it leaves to the reference), in batch order.

        The clock is read once: an event time at most that reading + skew is in range whenever it is checked (the
        clock only moves on), and a later one goes to the reference, which reads the clock itself.
        """
        latest = self._clock() + self._max_skew_us
        if not self.enabled:
            return [], list(range(len(payloads)))
        if not self._native:
            return self._msgspec_batch(payloads, range(len(payloads)), latest)
        accepted, rest = _fastjson.validate_batch(
            payloads,
            MIN_EVENT_TIME_US,
            max(-_INT64, min(latest, _INT64 - 1)),
            self._max_payload_bytes,
            EVENT_ID_MAX,
            USER_ID_MAX,
            PAGE_MAX,
            self._native_key,
            self._property,
        )
        if rest and self._msgspec:
            more, rest = self._msgspec_batch(payloads, rest, latest)
            if more:
                accepted += more
                accepted.sort(key=_position)
        return accepted, rest

    def _msgspec_batch(
        self, payloads: Sequence[bytes], positions: Sequence[int], latest: int
    ) -> tuple[list[Valid], list[int]]:
        """The msgspec path over the records at ``positions`` (ascending)."""
        accepted: list[Valid] = []
        rest: list[int] = []
        accept, refer = accepted.append, rest.append
        decode = _decode_plain
        seconds = self._seconds
        types = self._event_types
        prop = self._property
        key_field = self._key_field
        key_is_page = key_field == "page"
        suspects = self._suspects(payloads, positions)
        for i in positions:
            payload = payloads[i]
            if suspects and i in suspects and not self._passes_guards(payload):
                refer(i)
                continue
            try:
                plain = decode(payload)
            except _DECODE_ERRORS:
                refer(i)
                continue
            event_type = plain.event_type
            if types.get(event_type) is not True and not self._event_type_ok(event_type):
                refer(i)
                continue
            when = plain.event_time
            if type(when) is int:
                us = when * US_PER_MS
            elif type(when) is str:
                # The shapes this project (and most producers) write: YYYY-MM-DDTHH:MM:SS[.ffffff|.fff]Z. The
                # seconds prefix is parsed once by the reference parser and cached; others go to it directly.
                size = len(when)
                if (size == 27 or size == 24) and when[19] == "." and when[-1] in "Zz":
                    digits = when[20:-1]
                    if not (digits.isdigit() and digits.isascii()):
                        refer(i)
                        continue
                    micros = int(digits) if size == 27 else int(digits) * 1000
                elif size == 20 and when[19] in "Zz":
                    micros = 0
                else:
                    micros = -1
                if micros < 0:
                    us = parse_rfc3339_us(when)
                    if us is None:
                        refer(i)
                        continue
                else:
                    prefix = when[:19]
                    base = seconds.get(prefix, -1)
                    if base == -1:
                        if len(seconds) >= _CACHE_LIMIT:
                            seconds.clear()
                        base = seconds[prefix] = parse_rfc3339_us(prefix + "Z")
                    if base is None:
                        refer(i)
                        continue
                    us = base + micros
            elif math.isfinite(when) and when.is_integer():
                us = int(when) * US_PER_MS
            else:
                refer(i)
                continue
            if not MIN_EVENT_TIME_US <= us <= latest:
                refer(i)
                continue
            value = plain.value
            if type(value) is int:
                if not -_INT64 <= value < _INT64:
                    refer(i)
                    continue
            elif not math.isfinite(value):
                refer(i)
                continue
            properties = plain.properties
            if properties is UNSET:
                properties = None
            page = plain.page
            if key_is_page:
                key = page
            elif prop is not None:
                key = None if properties is None else properties.get(prop)
            else:
                key = getattr(plain, key_field)
            accept((i, plain.event_id, event_type, plain.user_id, us, page, value, properties, key))
        return accepted, rest

    def _suspects(self, payloads: Sequence[bytes], positions: Sequence[int]) -> set[int]:
        """Records that trip a batch-wide check (non-ASCII, a surrogate escape, length): checked one by one."""
        chosen = payloads if len(positions) == len(payloads) else [payloads[i] for i in positions]
        joined = b"\n".join(chosen)
        suspects: set[int] = set()
        limit = min(self._max_payload_bytes, _SHALLOW_BYTES)
        if max(map(len, chosen), default=0) > limit:
            suspects.update(i for i in positions if len(payloads[i]) > limit)
        if not joined.isascii():
            suspects.update(i for i in positions if not payloads[i].isascii())
        if b"\\ud" in joined or b"\\uD" in joined:
            suspects.update(i for i in positions if b"\\u" in payloads[i])
        return suspects

    def _passes_guards(self, payload: bytes) -> bool:
        if len(payload) > self._max_payload_bytes:
            return False
        if not payload.isascii():
            try:
                payload.decode("utf-8")  # msgspec does not check the UTF-8 of fields it skips
            except UnicodeDecodeError:
                return False
        if b"\\ud" in payload or b"\\uD" in payload:
            return False  # a surrogate escape: lone ones are malformed_json, and the reference knows which
        return len(payload) <= _SHALLOW_BYTES or payload.count(b"[") + payload.count(b"{") <= _MAX_BRACKETS

    def _event_type_ok(self, event_type: str) -> bool:
        if len(self._event_types) >= _CACHE_LIMIT:
            self._event_types.clear()
        known = self._event_types[event_type] = EVENT_TYPE_REGEX.fullmatch(event_type) is not None
        return known
