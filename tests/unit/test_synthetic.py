"""The synthetic source: URI parsing, deterministic block-independent generation, the requested mix of bad,
duplicate, late and too-late records, ordered arrivals, and Avro payloads."""

from __future__ import annotations

from collections import Counter
from dataclasses import fields

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from transforms.dead_letter import Rejection
from transforms.io.synthetic import (
    _BAD_AVRO,
    _BAD_JSON,
    BLOCK,
    EVENT_TYPES,
    ReadSynthetic,
    SyntheticSpec,
    as_replay,
    generate,
    generate_block,
    parse_synthetic_uri,
)
from transforms.parse import decode_avro, decode_json
from transforms.records import SourceRecord
from transforms.timefmt import parse_rfc3339_us
from transforms.validate import EventValidator

US = 1_000_000


# --- parse_synthetic_uri ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["synthetic://", "synthetic://demo", "synthetic://?", "SYNTHETIC://x"])
def test_defaults(uri):
    # URI schemes are case-insensitive (RFC 3986), as everywhere else in the source/sink selection.
    assert parse_synthetic_uri(uri) == SyntheticSpec()


def test_default_values():
    spec = SyntheticSpec()
    assert (spec.events, spec.rate, spec.keys, spec.users, spec.event_types) == (5000, 100.0, 20, 500, 4)
    assert (spec.bad, spec.duplicates, spec.late, spec.too_late) == (0.03, 0.02, 0.02, 0.0)
    assert (spec.seed, spec.format, spec.mode, spec.start_us) == (42, "json", "", parse_rfc3339_us(spec.start))


def test_every_parameter_is_parsed_with_its_type():
    uri = (
        "synthetic://name?events=123&rate=2.5&keys=3&users=9&event_types=6&bad=0.1&duplicates=0.2&late=0.3"
        "&too_late=0.4&too_late_by=99&late_by=30&skew=0&seed=-7&start=2025-06-01T12:00:00%2B02:00&format=avro"
        "&mode=replay&duration=1.5"
    )
    spec = parse_synthetic_uri(uri)
    assert spec == SyntheticSpec(
        events=123,
        rate=2.5,
        keys=3,
        users=9,
        event_types=6,
        bad=0.1,
        duplicates=0.2,
        late=0.3,
        too_late=0.4,
        too_late_by=99,
        late_by=30,
        skew=0.0,
        seed=-7,
        start="2025-06-01T12:00:00+02:00",
        format="avro",
        mode="replay",
        duration=1.5,
    )
    assert spec.start_us == parse_rfc3339_us("2025-06-01T10:00:00Z")
    assert {f.name for f in fields(SyntheticSpec)} == {
        "events", "rate", "keys", "users", "event_types", "bad", "duplicates", "late", "too_late", "too_late_by",
        "late_by", "skew", "seed", "start", "format", "mode", "duration",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:///x", "not a synthetic"),
        ("synthetic://?colour=red", "unknown synthetic parameter 'colour'"),
        ("synthetic://?events=abc", "events='abc' is not a valid int"),
        ("synthetic://?events=1.5", "events='1.5' is not a valid int"),
        ("synthetic://?rate=fast", "rate='fast' is not a valid float"),
        ("synthetic://?bad=2", "bad must be between 0 and 1"),
        ("synthetic://?late=-0.1", "late must be between 0 and 1"),
        ("synthetic://?bad=0.5&duplicates=0.3&late=0.3", "must not exceed 1"),
        ("synthetic://?events=-1", "events >= 0"),
        ("synthetic://?rate=0", "rate > 0"),
        ("synthetic://?keys=0", "keys >= 1"),
        ("synthetic://?users=0", "users >= 1"),
        ("synthetic://?event_types=7", "event_types <= 6"),
        ("synthetic://?mode=live", "mode must be empty or replay"),
        ("synthetic://?format=csv", "format must be json or avro"),
        ("synthetic://?start=yesterday", "not an RFC 3339 timestamp"),
        ("synthetic://?duration=-1", "duration must be >= 0"),
        ("synthetic://?events", "bad query field"),
    ],
)
def test_errors(uri, message):
    with pytest.raises(ValueError, match=message):
        parse_synthetic_uri(uri)


def test_as_replay():
    spec = parse_synthetic_uri(as_replay("synthetic://x?events=10&mode=&seed=3"))
    assert (spec.events, spec.seed, spec.mode) == (10, 3, "replay")


# --- generation ------------------------------------------------------------------------------------------------------


def test_deterministic_for_a_seed():
    spec = parse_synthetic_uri("synthetic://?events=2500&seed=9")
    first, second = list(generate(spec)), list(generate(spec))
    assert first == second and len(first) == 2500
    other = list(generate(parse_synthetic_uri("synthetic://?events=2500&seed=10")))
    assert [p for _, _, p in other] != [p for _, _, p in first]


def test_blocks_are_independent():
    spec = parse_synthetic_uri("synthetic://?events=25000&rate=7.3&seed=5")
    whole = list(generate(spec))
    assert [s for s, _, _ in whole] == list(range(25_000))
    # Any block alone, in any order, is the same as its slice of the whole run.
    for block in (2, 0, 1):
        assert list(generate_block(spec, block)) == whole[block * BLOCK : (block + 1) * BLOCK]
    # The count of events only truncates: a longer run starts with the very same records.
    longer = list(generate(parse_synthetic_uri("synthetic://?events=30000&rate=7.3&seed=5")))
    assert longer[:25_000] == whole


def test_read_synthetic_in_a_pipeline_matches_generate():
    uri = "synthetic://?events=21000&seed=4"
    expected = [(seq, arrival, payload) for seq, arrival, payload in generate(parse_synthetic_uri(uri))]
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([])) as p:
        records = p | ReadSynthetic(uri) | beam.FlatMap(_records_of)
        assert_that(records, equal_to(expected))


def _records_of(batch):
    for i, payload in enumerate(batch.payloads):
        yield batch.metadata[i]["sequence"], batch.arrivals[i], payload


def test_arrival_times_are_ordered_and_spaced_by_rate():
    spec = parse_synthetic_uri("synthetic://?events=25000&rate=3&start=2024-01-01T00:00:00Z")
    arrivals = [arrival for _, arrival, _ in generate(spec)]
    assert arrivals == sorted(arrivals)
    assert arrivals[0] == spec.start_us
    span = (arrivals[-1] - arrivals[0]) / US
    assert span == pytest.approx(24_999 / 3, abs=1e-3)


def _event_time_us(obj: dict) -> int:
    value = obj["event_time"]
    return value * 1000 if isinstance(value, int) else parse_rfc3339_us(value)


def classify(spec: SyntheticSpec) -> tuple[Counter, list[int], int]:
    """Counts of bad / duplicate / late / too_late / normal records, arrival times of the too-late ones, and the
    number of records arriving after the too-late warm-up."""
    kinds: Counter = Counter()
    seen: set[bytes] = set()
    too_late_arrivals: list[int] = []
    warm_up_end = spec.start_us + (spec.too_late_by + 2 * spec.late_by) * US
    after_warm_up = 0
    for _, arrival, payload in generate(spec):
        after_warm_up += arrival > warm_up_end
        if payload in _BAD_JSON:
            kinds["bad"] += 1
            continue
        if payload in seen:
            kinds["duplicates"] += 1
            continue
        seen.add(payload)
        obj = orjson.loads(payload)
        assert set(obj) >= {"event_id", "event_type", "user_id", "event_time", "page", "value"}
        assert obj["event_type"] in EVENT_TYPES[: spec.event_types]
        behind_us = arrival - _event_time_us(obj)
        if behind_us < 2 * US + 1000:
            kinds["normal"] += 1
        elif spec.late_by * US // 3 - 1000 <= behind_us < spec.late_by * US:
            kinds["late"] += 1
        elif abs(behind_us - spec.too_late_by * US) < 1000:
            kinds["too_late"] += 1
            too_late_arrivals.append(arrival)
        else:
            raise AssertionError(f"unexpected lateness {behind_us} µs: {obj}")
    return kinds, too_late_arrivals, after_warm_up


def test_shares_are_roughly_as_requested():
    spec = parse_synthetic_uri(
        "synthetic://?events=20000&rate=20&bad=0.05&duplicates=0.06&late=0.07&too_late=0.04&too_late_by=60&late_by=30"
    )
    kinds, too_late_arrivals, after_warm_up = classify(spec)
    n = spec.events
    assert sum(kinds.values()) == n
    for kind, share in (("bad", 0.05), ("duplicates", 0.06), ("late", 0.07)):
        assert kinds[kind] == pytest.approx(share * n, rel=0.3), (kind, kinds)
    # too-late records are only drawn once the warm-up is over
    assert kinds["too_late"] == pytest.approx(0.04 * after_warm_up, rel=0.3), kinds
    warm_up_end = spec.start_us + (spec.too_late_by + 2 * spec.late_by) * US
    assert too_late_arrivals and min(too_late_arrivals) > warm_up_end


def test_no_too_late_records_before_the_warm_up():
    # 3600 + 2 * 180 s of warm-up at 100 records/s is 396,000 records: none of the first 20,000 can be too late.
    spec = parse_synthetic_uri("synthetic://?events=20000&too_late=0.5")
    kinds, too_late_arrivals, after_warm_up = classify(spec)
    assert after_warm_up == 0 and kinds["too_late"] == 0 and not too_late_arrivals


def test_zero_shares_give_only_clean_events():
    spec = parse_synthetic_uri("synthetic://?events=3000&bad=0&duplicates=0&late=0&too_late=0")
    kinds, _, _ = classify(spec)
    assert kinds == Counter(normal=3000)


def test_bad_records_are_rejected_and_clean_ones_accepted():
    spec = parse_synthetic_uri("synthetic://?events=2000&bad=0.1")
    validator = EventValidator()
    codes = Counter()
    for _, arrival, payload in generate(spec):
        result = decode_json(payload)
        if not isinstance(result, Rejection):
            result = validator.validate(result, SourceRecord(payload, "synthetic"), arrival)
        assert isinstance(result, Rejection) == (payload in _BAD_JSON), payload
        if isinstance(result, Rejection):
            codes[result.code] += 1
    # Every kind of contract failure shows up.
    assert set(codes) == {
        "malformed_json", "invalid_encoding", "not_an_object", "missing_field", "invalid_type", "invalid_value",
        "timestamp_out_of_range",
    }  # fmt: skip


def test_avro_format_produces_decodable_records():
    spec = parse_synthetic_uri("synthetic://?events=3000&format=avro&bad=0.05&duplicates=0.02&seed=3")
    good = bad = 0
    for seq, _, payload in generate(spec):
        decoded = decode_avro(payload)
        if payload in _BAD_AVRO:
            bad += 1
            assert isinstance(decoded, Rejection) and decoded.code in ("malformed_avro", "invalid_encoding")
            continue
        good += 1
        assert isinstance(decoded, dict), (seq, decoded)
        assert decoded["event_id"].startswith("e-3-") and decoded["user_id"].startswith("user-")
        assert decoded["event_type"] in EVENT_TYPES
    assert good + bad == 3000
    assert bad == pytest.approx(0.05 * 3000, rel=0.3)
