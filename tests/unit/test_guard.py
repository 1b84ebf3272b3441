"""Poison records: a step that throws on a batch is retried record by record, and only the records that throw on their
own become dead letters (stage, processing_error, exception text, original bytes); the others go on.

The throwing steps here are functions built to fail on one chosen record; the whole-graph timelines are in
tests/streaming/test_poison_records.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

import schemas
from transforms import dead_letter as dl
from transforms.guard import guarded
from transforms.records import SourceRecord

RECORDS = [SourceRecord(f'{{"event_id":"e{i}"}}'.encode(), "topic-a", {"offset": i}) for i in range(6)]
POISON = SourceRecord(b'{"event_id":"poison","raw":"\xff bytes kept"}', "topic-a", {"offset": 99})


def doubled(records: Sequence[SourceRecord]) -> list[bytes]:
    """A step: throws if the poison record is among its records, with an object address in the message."""
    if any(record == POISON for record in records):
        raise ZeroDivisionError(f"cannot handle poison at {object()}")
    return [record.payload * 2 for record in records]


def test_a_batch_that_does_not_throw_is_one_call_and_one_result() -> None:
    calls: list[int] = []

    def step(records: Sequence[SourceRecord]) -> list[bytes]:
        calls.append(len(records))
        return doubled(records)

    results, dead = guarded(step, RECORDS, lambda r: r, dl.STAGE_DEDUP, "Doubled")
    assert results == [[r.payload * 2 for r in RECORDS]]
    assert dead == []
    assert calls == [len(RECORDS)]


def test_a_batch_that_throws_is_retried_record_by_record_and_only_the_poison_is_dead_lettered() -> None:
    batch = [*RECORDS[:3], POISON, *RECORDS[3:]]
    results, dead = guarded(doubled, batch, lambda r: r, dl.STAGE_DEDUP, "Doubled")
    assert results == [[r.payload * 2] for r in RECORDS]  # every other record, once, in order
    assert len(dead) == 1
    (row,) = dead
    assert (row["error_code"], row["error_field"], row["stage"], dl.original_payload(row), row["source"]) == (
        dl.PROCESSING_ERROR,
        None,
        "dedup",
        POISON.payload,
        "topic-a",
    )
    assert row["source_metadata"] == {"offset": 99}
    assert row["error_message"].startswith("Doubled failed: ZeroDivisionError: cannot handle poison")
    assert " at 0x" not in row["error_message"]  # no memory address: the same record gives the same text
    assert set(row) == set(schemas.bigquery_field_names("dead_letter"))


def test_the_retry_takes_each_record_with_its_own_function() -> None:
    # Parse and validate retry with the reference alone: the fast path that threw on the batch is not asked again.
    def fast(records: Sequence[SourceRecord]) -> str:
        raise RuntimeError("the fast path has a bug")

    def reference(records: Sequence[SourceRecord]) -> str:
        (record,) = records
        if record is POISON:
            raise ValueError("the reference chokes too")
        return record.source

    results, dead = guarded(fast, [RECORDS[0], POISON], lambda r: r, dl.STAGE_PARSE, "Parse", one_fn=reference)
    assert results == ["topic-a"]
    assert [row["stage"] for row in dead] == ["parse"]
    assert "ValueError: the reference chokes too" in dead[0]["error_message"]


def test_the_items_may_be_anything_the_record_of_which_can_be_found() -> None:
    positions = list(range(len(RECORDS))) + [99]
    records = {**dict(enumerate(RECORDS)), 99: POISON}
    results, dead = guarded(
        lambda items: doubled([records[i] for i in items]), positions, records.__getitem__, dl.STAGE_WINDOW, "Step"
    )
    assert len(results) == len(RECORDS)
    assert [dl.original_payload(row) for row in dead] == [POISON.payload]


class _GuardedDoFn(beam.DoFn):
    def process(self, batch: list[SourceRecord]) -> Iterator[Any]:
        results, dead = guarded(doubled, batch, lambda r: r, dl.STAGE_EVENT_TIME, "Doubled")
        for row in dead:
            yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)
        for result in results:
            yield from result


def test_in_a_pipeline_the_poison_is_dead_lettered_and_the_rest_flows() -> None:
    with BeamTestPipeline() as p:
        out = (
            p
            | beam.Create([[RECORDS[0], POISON, RECORDS[1]], RECORDS[2:]])
            | beam.ParDo(_GuardedDoFn()).with_outputs(dl.DEAD_LETTER_TAG, main="main")
        )
        assert_that(out.main, equal_to([r.payload * 2 for r in RECORDS]), label="Main")
        assert_that(
            out[dl.DEAD_LETTER_TAG] | beam.Map(lambda row: (row["stage"], dl.original_payload(row))),
            equal_to([("event_time", POISON.payload)]),
            label="DeadLetter",
        )
