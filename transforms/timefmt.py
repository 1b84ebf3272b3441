"""Time parsing and formatting used by the event contract: RFC 3339 in, RFC 3339 UTC out, microseconds inside.

``datetime.fromisoformat`` accepts far more than RFC 3339 (no offset, week dates, ``+0530``...), so the grammar
is checked with an explicit pattern first.
"""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

US_PER_SECOND = 1_000_000
US_PER_MS = 1_000
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# RFC 3339 section 5.6 date-time; ABNF literals are case-insensitive, so "t" and "z" are allowed too.
_RFC3339 = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(\.[0-9]+)?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)


def parse_rfc3339_us(text: str) -> int | None:
    """Microseconds since the epoch for an RFC 3339 date-time with offset, or None if it is not one.

    Fractions finer than a microsecond are truncated; a leap second (``:60``) is read as the next second.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction, zulu, sign, off_hour, off_minute = match.group(7, 8, 9, 10, 11)
    if hour > 23 or minute > 59 or second > 60:
        return None
    try:
        base = datetime(year, month, day, hour, minute, tzinfo=timezone.utc)
    except ValueError:  # month 13, February 30th, year 0...
        return None
    micros = 0
    if fraction:
        digits = fraction[1:7]
        micros = int(digits.ljust(6, "0"))
    offset_us = 0
    if not zulu:
        off_h, off_m = int(off_hour), int(off_minute)
        if off_h > 23 or off_m > 59:
            return None
        offset_us = (off_h * 3600 + off_m * 60) * US_PER_SECOND
        if sign == "-":
            offset_us = -offset_us
    delta = base - _EPOCH
    whole_us = (delta.days * 86400 + delta.seconds + second) * US_PER_SECOND
    return whole_us + micros - offset_us


def format_rfc3339_us(us: int) -> str:
    """RFC 3339 UTC with a ``Z``: whole seconds bare, else milliseconds or microseconds as needed."""
    dt = _EPOCH + timedelta(microseconds=us)
    # Not strftime("%Y"): glibc does not zero-pad years below 1000, which RFC 3339 requires.
    text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}"
    frac = us % US_PER_SECOND
    if frac == 0:
        return text + "Z"
    if frac % US_PER_MS == 0:
        return f"{text}.{frac // US_PER_MS:03d}Z"
    return f"{text}.{frac:06d}Z"


def now_us() -> int:
    """Processing time (wall clock) in microseconds; never used as event time."""
    return time.time_ns() // 1_000
