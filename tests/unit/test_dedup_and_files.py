"""Dedup (both implementations, one rule) and raw-bytes file reading."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from transforms.dedup import DeduplicateEvents, is_duplicate
from transforms.io.files import ReadJsonLines
from transforms.records import Event

S = 1_000_000


def ev(event_id: str, seconds: int) -> Event:
    return Event(event_id, "click", "u", 1_700_000_000 * S + seconds * S, None, 1, None, None, b"", "t", None, 0)


def test_rule():
    assert not is_duplicate(None, 5, 10)
    assert is_duplicate(100, 110, 10) and is_duplicate(100, 90, 10)
    assert not is_duplicate(100, 111, 10)


@pytest.mark.parametrize("impl", ["group", "state"])
def test_same_id_within_horizon_is_dropped_outside_kept(impl):
    events = [ev("a", 0), ev("a", 5), ev("a", 700), ev("b", 0), ev("b", 0)]
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        kept = (
            p
            | beam.Create(events)
            | beam.Map(lambda e: beam.window.TimestampedValue(e, e.event_time_us / S))
            | DeduplicateEvents(horizon_s=600, impl=impl, bounded=True)
            | beam.Map(lambda e: (e.event_id, (e.event_time_us // S) % 1000))
        )
        assert_that(kept, equal_to([("a", 0), ("a", 700), ("b", 0)]))


def test_files_are_read_as_raw_bytes(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":1}\n\xff\xfe not utf-8\r\n\n{"b":2}')  # bad bytes, CRLF, empty line, no final newline
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        records = p | ReadJsonLines(str(path)) | beam.Map(lambda r: (r.payload, r.source == str(path)))
        assert_that(
            records, equal_to([(b'{"a":1}', True), (b"\xff\xfe not utf-8", True), (b"", True), (b'{"b":2}', True)])
        )
