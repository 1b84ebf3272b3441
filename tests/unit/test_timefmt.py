"""RFC 3339 parsing (section 5.6 grammar, to the microsecond) and formatting (UTC, Z), and their round trips."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.timefmt import US_PER_MS, US_PER_SECOND, format_rfc3339_us, now_us, parse_rfc3339_us

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def us_of(dt: datetime) -> int:
    delta = dt - EPOCH
    return (delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("1970-01-01T00:00:00Z", 0, id="epoch"),
        pytest.param("1970-01-01T00:00:00.000001Z", 1, id="epoch-plus-1us"),
        pytest.param("1969-12-31T23:59:59.999999Z", -1, id="epoch-minus-1us"),
        pytest.param("1969-12-31T23:59:59.5Z", -500_000, id="pre-epoch-fraction"),
        pytest.param("2000-01-01T00:00:00Z", 946_684_800_000_000, id="y2k"),
        pytest.param("1999-12-31T23:59:59.999Z", 946_684_799_999_000, id="just-before-y2k"),
        pytest.param("2023-11-14T22:13:20Z", 1_700_000_000_000_000, id="utc"),
        pytest.param("2023-11-14t22:13:20z", 1_700_000_000_000_000, id="lowercase-t-and-z"),
        pytest.param("2023-11-14T22:13:20+00:00", 1_700_000_000_000_000, id="plus-zero"),
        pytest.param("2023-11-14T22:13:20-00:00", 1_700_000_000_000_000, id="minus-zero-unknown-local-offset"),
        pytest.param("2023-11-15T03:43:20+05:30", 1_700_000_000_000_000, id="plus-0530"),
        pytest.param("2023-11-14T14:13:20-08:00", 1_700_000_000_000_000, id="minus-0800"),
        pytest.param("2023-11-15T22:12:20+23:59", 1_700_000_000_000_000, id="plus-2359"),
        pytest.param("2023-11-13T22:14:20-23:59", 1_700_000_000_000_000, id="minus-2359"),
        pytest.param("2023-11-14T22:13:20.1Z", 1_700_000_000_100_000, id="one-fraction-digit"),
        pytest.param("2023-11-14T22:13:20.12Z", 1_700_000_000_120_000, id="two-fraction-digits"),
        pytest.param("2023-11-14T22:13:20.123Z", 1_700_000_000_123_000, id="millis"),
        pytest.param("2023-11-14T22:13:20.123456Z", 1_700_000_000_123_456, id="micros"),
        pytest.param("2023-11-14T22:13:20.1234567Z", 1_700_000_000_123_456, id="seven-digits-truncated"),
        pytest.param("2023-11-14T22:13:20.999999999Z", 1_700_000_000_999_999, id="nanos-truncated-not-rounded"),
        pytest.param("2023-11-14T22:13:20." + "0" * 100 + "1Z", 1_700_000_000_000_000, id="101-fraction-digits"),
        pytest.param("2023-11-14T22:13:20.000000Z", 1_700_000_000_000_000, id="zero-fraction"),
        pytest.param("2023-11-14T22:13:20.5+05:30", 1_699_980_200_500_000, id="fraction-with-offset"),
        pytest.param("2016-12-31T23:59:60Z", 1_483_228_800_000_000, id="leap-second-is-next-second"),
        pytest.param("2016-12-31T23:59:60.999999Z", 1_483_228_800_999_999, id="leap-second-fraction"),
        pytest.param("2017-01-01T05:29:60+05:30", 1_483_228_800_000_000, id="leap-second-local-offset"),
        pytest.param("2020-02-29T00:00:00Z", 1_582_934_400_000_000, id="leap-day"),
        pytest.param("2000-02-29T00:00:00Z", 951_782_400_000_000, id="leap-day-2000"),
        pytest.param("0001-01-01T00:00:00Z", -62_135_596_800_000_000, id="year-1"),
        pytest.param("9999-12-31T23:59:59.999999Z", 253_402_300_799_999_999, id="year-9999"),
        pytest.param(
            "9999-12-31T23:59:59-23:59",
            253_402_300_799_000_000 + (23 * 60 + 59) * 60 * US_PER_SECOND,
            id="beyond-9999-via-offset",
        ),
        pytest.param(
            "0001-01-01T00:00:00+23:59",
            -62_135_596_800_000_000 - (23 * 60 + 59) * 60 * US_PER_SECOND,
            id="before-year-1-via-offset",
        ),
    ],
)
def test_parse_valid(text: str, expected: int) -> None:
    assert parse_rfc3339_us(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("2023-11-14", id="date-only"),
        pytest.param("22:13:20Z", id="time-only"),
        pytest.param("2023-11-14T22:13:20", id="no-offset"),
        pytest.param("2023-11-14T22:13:20.5", id="fraction-no-offset"),
        pytest.param("2023-11-14 22:13:20Z", id="space-separator"),
        pytest.param("2023-11-14_22:13:20Z", id="underscore-separator"),
        pytest.param("2023-11-14T22:13Z", id="no-seconds"),
        pytest.param("2023-11-14T22Z", id="hour-only"),
        pytest.param("2023-11-14T22:13:20+0530", id="offset-no-colon"),
        pytest.param("2023-11-14T22:13:20+05", id="offset-hours-only"),
        pytest.param("2023-11-14T22:13:20+5:30", id="offset-one-digit-hour"),
        pytest.param("2023-11-14T22:13:20UTC", id="utc-name"),
        pytest.param("2023-11-14T22:13:20GMT+1", id="gmt-name"),
        pytest.param("2023-11-14T22:13:20ZZ", id="double-z"),
        pytest.param("2023-11-14T22:13:20Z+00:00", id="z-and-offset"),
        pytest.param("2023-11-14T22:13:20.Z", id="dot-without-digits"),
        pytest.param("2023-11-14T22:13:20,5Z", id="comma-fraction"),
        pytest.param("2023-11-14T22:13:20.5.5Z", id="two-fractions"),
        pytest.param(" 2023-11-14T22:13:20Z", id="leading-space"),
        pytest.param("2023-11-14T22:13:20Z ", id="trailing-space"),
        pytest.param("2023-11-14T22:13:20Z\n", id="trailing-newline"),
        pytest.param("\n2023-11-14T22:13:20Z", id="leading-newline"),
        pytest.param("2023-11-14T22:13:20\nZ", id="newline-before-z"),
        pytest.param("20231114T221320Z", id="iso-basic"),
        pytest.param("2023-318T22:13:20Z", id="ordinal-date"),
        pytest.param("2023-W46-2T22:13:20Z", id="week-date"),
        pytest.param("+2023-11-14T22:13:20Z", id="signed-year"),
        pytest.param("12023-11-14T22:13:20Z", id="five-digit-year"),
        pytest.param("223-11-14T22:13:20Z", id="three-digit-year"),
        pytest.param("2023-1-14T22:13:20Z", id="one-digit-month"),
        pytest.param("2023-11-4T22:13:20Z", id="one-digit-day"),
        pytest.param("2023-11-14T2:13:20Z", id="one-digit-hour"),
        pytest.param("0000-01-01T00:00:00Z", id="year-0"),
        pytest.param("2023-00-14T22:13:20Z", id="month-0"),
        pytest.param("2023-13-14T22:13:20Z", id="month-13"),
        pytest.param("2023-11-00T22:13:20Z", id="day-0"),
        pytest.param("2023-11-31T22:13:20Z", id="nov-31"),
        pytest.param("2023-02-29T00:00:00Z", id="feb-29-common-year"),
        pytest.param("1900-02-29T00:00:00Z", id="feb-29-1900"),
        pytest.param("2023-02-30T00:00:00Z", id="feb-30"),
        pytest.param("2023-11-14T24:00:00Z", id="hour-24"),
        pytest.param("2023-11-14T22:60:00Z", id="minute-60"),
        pytest.param("2023-11-14T22:13:61Z", id="second-61"),
        pytest.param("2023-11-14T22:13:99Z", id="second-99"),
        pytest.param("2023-11-14T22:13:20+24:00", id="offset-hour-24"),
        pytest.param("2023-11-14T22:13:20-24:00", id="offset-minus-24"),
        pytest.param("2023-11-14T22:13:20+05:60", id="offset-minute-60"),
        pytest.param("2023-11-14T22:13:20+99:99", id="offset-99"),
        pytest.param("２０２３-11-14T22:13:20Z", id="fullwidth-digits"),
        pytest.param("٢٠٢٣-١١-١٤T٢٢:١٣:٢٠Z", id="arabic-indic-digits"),
        pytest.param("2023-11-14T22:13:20.٥Z", id="arabic-indic-fraction"),
        pytest.param("2023-11-14T22:13:20+٠٥:٣٠", id="arabic-indic-offset"),
        pytest.param("2023-11-14T22:13:2𝟎Z", id="mathematical-digit"),
        pytest.param("2023‐11‐14T22:13:20Z", id="unicode-hyphen"),
        pytest.param("2023-11-14Ｔ22:13:20Z", id="fullwidth-t"),
        pytest.param("2023-11-14T22:13:20Ｚ", id="fullwidth-z"),
        pytest.param("2023-11-14T22∶13∶20Z", id="ratio-colon"),
        pytest.param("1700000000000", id="epoch-ms-string"),
        pytest.param("2023-11-14T22:13:20.1e3Z", id="exponent-fraction"),
    ],
)
def test_parse_invalid(text: str) -> None:
    assert parse_rfc3339_us(text) is None


@pytest.mark.parametrize(
    ("us", "text"),
    [
        pytest.param(0, "1970-01-01T00:00:00Z", id="epoch"),
        pytest.param(1, "1970-01-01T00:00:00.000001Z", id="one-us"),
        pytest.param(1_000, "1970-01-01T00:00:00.001Z", id="one-ms-uses-millis"),
        pytest.param(1_500_000, "1970-01-01T00:00:01.500Z", id="half-second-uses-millis"),
        pytest.param(1_000_010, "1970-01-01T00:00:01.000010Z", id="needs-micros"),
        pytest.param(-1, "1969-12-31T23:59:59.999999Z", id="minus-one-us"),
        pytest.param(-1_000, "1969-12-31T23:59:59.999Z", id="minus-one-ms"),
        pytest.param(-US_PER_SECOND, "1969-12-31T23:59:59Z", id="minus-one-second"),
        pytest.param(946_684_800_000_000, "2000-01-01T00:00:00Z", id="y2k"),
        pytest.param(1_700_000_000_123_456, "2023-11-14T22:13:20.123456Z", id="micros"),
        pytest.param(253_402_300_799_999_999, "9999-12-31T23:59:59.999999Z", id="year-9999"),
        pytest.param(-30_610_224_000_000_000, "1000-01-01T00:00:00Z", id="year-1000"),
    ],
)
def test_format(us: int, text: str) -> None:
    assert format_rfc3339_us(us) == text
    assert parse_rfc3339_us(text) == us


def test_format_pads_years_below_1000() -> None:
    assert format_rfc3339_us(parse_rfc3339_us("0999-12-31T23:59:59Z")) == "0999-12-31T23:59:59Z"


YEAR_1000_US = -30_610_224_000_000_000
YEAR_9999_END_US = 253_402_300_799_999_999


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(st.integers(min_value=YEAR_1000_US, max_value=YEAR_9999_END_US))
def test_format_then_parse_round_trips(us: int) -> None:
    text = format_rfc3339_us(us)
    assert parse_rfc3339_us(text) == us
    assert text.endswith("Z") and len(text) in (20, 24, 27)  # whole seconds, millis or micros


@settings(max_examples=1500, deadline=None, derandomize=True, database=None)
@given(
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
    st.sampled_from(["T", "t"]),
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=0, max_value=999),
)
def test_parse_matches_datetime_for_any_offset_and_precision(
    local: datetime, offset_min: int, sep: str, digits: int, extra: int
) -> None:
    """Builds RFC 3339 text from a local time and offset; the parse equals the UTC instant, truncated to us."""
    fraction = f"{local.microsecond:06d}{extra:03d}{'7' * max(0, digits - 9)}"[:digits]
    sign = "-" if offset_min < 0 else "+"
    offset = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    if offset_min == 0 and extra % 2:
        offset = "Z" if extra % 4 == 1 else "z"
    text = f"{local:%Y-%m-%d}{sep}{local:%H:%M:%S}" + (f".{fraction}" if digits else "") + offset
    expected_local = local.replace(microsecond=int(fraction[:6].ljust(6, "0")) if digits else 0)
    expected = us_of(expected_local.replace(tzinfo=timezone(timedelta(minutes=offset_min))))
    assert parse_rfc3339_us(text) == expected
    if digits <= 6 and offset not in ("z",):
        # Python's own ISO parser agrees on everything RFC 3339 allows that it also accepts
        assert us_of(datetime.fromisoformat(text.replace("t", "T"))) == expected


@settings(max_examples=1000, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=40))
def test_parse_never_raises(text: str) -> None:
    result = parse_rfc3339_us(text)
    assert result is None or isinstance(result, int)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(st.integers(min_value=YEAR_1000_US, max_value=YEAR_9999_END_US))
def test_format_agrees_with_datetime_isoformat(us: int) -> None:
    dt = EPOCH + timedelta(microseconds=us)
    assert parse_rfc3339_us(dt.isoformat()) == us  # "+00:00" offset form
    assert format_rfc3339_us(us)[:19] == dt.isoformat()[:19]


def test_constants() -> None:
    assert (US_PER_SECOND, US_PER_MS) == (1_000_000, 1_000)


def test_now_us_is_the_wall_clock_in_microseconds() -> None:
    before = time.time_ns() // 1_000
    value = now_us()
    after = time.time_ns() // 1_000
    assert isinstance(value, int)
    assert before <= value <= after
