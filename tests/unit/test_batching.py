"""BatchRecords: the records of a bundle gathered into batches bounded in count and bytes, each record keeping its
arrival time, the batch stamped with the earliest; batches read by a source pass through."""

from __future__ import annotations

import gc

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms import batching
from transforms.batching import GC_THRESHOLDS, BatchRecords, relax_gc
from transforms.records import RecordBatch, SourceRecord


def records(n: int, size: int = 10, source: str = "topic") -> list[TimestampedValue]:
    return [
        TimestampedValue(SourceRecord(bytes([65 + i % 26]) * size, source, {"offset": i}), 1_700_000_000 + n - i)
        for i in range(n)
    ]


def shape(batch: RecordBatch) -> tuple:
    return (batch.source, len(batch.payloads), sum(map(len, batch.payloads)))


def run(elements, **limits):
    """The batches of one bundle (the FnApiRunner takes a small Create as one bundle), with their timestamps."""
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([])) as p:
        out = p | beam.Create(elements, reshuffle=False) | BatchRecords(**limits)
        yield out


def test_a_bundle_becomes_batches_of_at_most_max_records():
    for out in run(records(10), max_records=4):
        assert_that(out | beam.Map(shape), equal_to([("topic", 4, 40), ("topic", 4, 40), ("topic", 2, 20)]))


def test_a_batch_is_cut_when_it_reaches_max_bytes_and_a_large_record_is_a_batch_of_its_own():
    big = TimestampedValue(SourceRecord(b"x" * 100, "topic"), 1_700_000_000)
    for out in run([*records(3), big, *records(2)], max_bytes=25):
        assert_that(
            out | beam.Map(shape),
            equal_to([("topic", 3, 30), ("topic", 1, 100), ("topic", 2, 20)]),
        )


def test_each_record_keeps_its_arrival_and_metadata_and_the_batch_is_stamped_with_the_earliest():
    for out in run(records(5)):
        assert_that(
            out
            | beam.Map(lambda b, t=beam.DoFn.TimestampParam: (b.arrivals, [m["offset"] for m in b.metadata], t.micros)),
            equal_to([([(1_700_000_005 - i) * 1_000_000 for i in range(5)], list(range(5)), 1_700_000_001_000_000)]),
        )


def test_records_of_another_source_start_a_new_batch():
    elements = [*records(2, source="a"), *records(3, source="b"), *records(1, source="a")]
    for out in run(elements):
        assert_that(out | beam.Map(shape), equal_to([("a", 2, 20), ("b", 3, 30), ("a", 1, 10)]))


def test_batches_a_source_read_itself_pass_through_untouched():
    batch = RecordBatch("file.jsonl", [b"1", b"2"])
    for out in run([batch]):
        assert_that(out, equal_to([batch]))


def test_no_metadata_and_no_decoded_objects_stay_none():
    for out in run([SourceRecord(b"a", "s"), SourceRecord(b"b", "s")]):
        assert_that(out | beam.Map(lambda b: (b.metadata, b.decoded)), equal_to([(None, None)]))


def test_the_gc_thresholds_are_raised_and_never_lowered():
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)  # CPython's defaults
        relax_gc(GC_THRESHOLDS)
        assert gc.get_threshold() == GC_THRESHOLDS
        gc.set_threshold(10 * GC_THRESHOLDS[0], 5, 1000)  # an operator's higher setting stays as it is
        relax_gc(GC_THRESHOLDS)
        assert gc.get_threshold() == (10 * GC_THRESHOLDS[0], 5, 1000)
    finally:
        gc.set_threshold(*saved)


def test_the_gc_is_left_alone_unless_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(batching, "relax_gc", calls.append)
    batching._GatherDoFn(10, 10, None).setup()
    batching._GatherDoFn(10, 10, GC_THRESHOLDS).setup()
    assert calls == [GC_THRESHOLDS]
