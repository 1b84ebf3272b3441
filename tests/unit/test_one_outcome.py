"""Property: any byte string yields exactly one valid event or exactly one dead letter, never an exception."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms import dead_letter as dl
from transforms.parse import decode_avro, decode_json, parse_record
from transforms.records import Event, SourceRecord
from transforms.validate import EventValidator

VALIDATOR = EventValidator(clock=lambda: 1_800_000_000_000_000)
CODES = set(dl.ERROR_CODES)
PROFILE = settings(max_examples=1500, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def single_outcome(payload: bytes, decode) -> object:
    record = SourceRecord(payload, "fuzz")
    parsed = parse_record(record, decode, 4096)
    result = parsed if type(parsed) is dl.Rejection else VALIDATOR.validate(parsed, record)
    assert type(result) in (Event, dl.Rejection)
    if type(result) is dl.Rejection:
        assert result.code in CODES and result.message
        row = dl.dead_letter(result, payload, "fuzz", None, "parse")
        assert dl.original_payload(row) == payload  # the original bytes survive, byte for byte
    return result


@PROFILE
@given(st.binary(max_size=5000))
def test_any_bytes_json(payload):
    assert single_outcome(payload, decode_json) == single_outcome(payload, decode_json)  # deterministic too


@PROFILE
@given(st.binary(max_size=600))
def test_any_bytes_avro(payload):
    single_outcome(payload, decode_avro)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
fields = st.sampled_from(["event_id", "event_type", "user_id", "event_time", "page", "value", "properties", "x"])
base = {"event_id": "e", "event_type": "click", "user_id": "u", "event_time": "2024-01-01T00:00:00Z"}


@PROFILE
@given(st.dictionaries(fields, json_values, max_size=7), st.booleans(), st.binary(max_size=3), st.integers(0, 200))
def test_near_valid_objects(changes, drop_base, splice, cut):
    obj = dict(changes) if drop_base else {**base, **changes}
    payload = json.dumps(obj).encode()
    for variant in (payload, payload[:cut] + splice + payload[cut:]):
        single_outcome(variant, decode_json)
