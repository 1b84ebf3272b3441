"""Poison records in the whole graph: a record that makes a step past validation throw is dead-lettered with the
step's stage, and every other record, before and after it, is aggregated exactly as without it.

The throw is injected by wrapping, in this test process only, a function the real step calls (monkeypatch), so
that it raises for one chosen record; the direct runner runs the steps in this process. Times are seconds after
T0 = 2024-01-01T00:00:00Z.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines.runners import direct_runner
from tests.streaming.timeline import at, record, stream
from transforms import analytics, batched, dedup, fast_json, windowing
from transforms import dead_letter as dl
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.records import Event, RecordBatch
from transforms.validate import EventValidator
from transforms.windowing import FIXED, WindowSpec

SPEC = WindowSpec(FIXED, size_s=60, allowed_lateness_s=120, early_firing_s=0)
POISON_SECONDS = 33.777777  # event time of the poison record: only it makes the patched step throw


def poisoned(original: Callable, when: Callable[..., bool]) -> Callable:
    def step(*args: Any) -> Any:
        if when(*args):
            raise RuntimeError("poison record")
        return original(*args)

    return step


def is_poison_event(event: Event) -> bool:
    return event.event_id == "poison"


def is_poison_time(_window_fn: Any, timestamp_us: int, _lateness_us: int) -> bool:
    return timestamp_us % 1_000_000 == 777_777


def is_poison_dedup(_first_seen_us: int | None, event_time_us: int, _horizon_us: int) -> bool:
    return event_time_us % 1_000_000 == 777_777


# (module, function, predicate, stage): where the poison throws.
STEPS = {
    "event_time": (analytics, "_with_event_time", is_poison_event, "AssignEventTime"),
    "dedup": (dedup, "is_duplicate", is_poison_dedup, "DeduplicateEvents"),
    "window": (windowing, "latest_deadline_us", is_poison_time, "FilterTooLate"),
}


@pytest.mark.parametrize("stage", sorted(STEPS))
def test_poison_record_is_dead_lettered_and_the_stream_goes_on(stage: str, monkeypatch) -> None:
    module, name, predicate, step = STEPS[stage]
    monkeypatch.setattr(module, name, poisoned(getattr(module, name), predicate))
    poison = record("poison", POISON_SECONDS, value=1000)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 10, value=1), record("b", 20, value=2)])  # before the poison
        .add_elements([poison])  # throws in the patched step
        .add_elements([record("c", 40, value=4)])  # same window, after the poison: still counted
        .advance_watermark_to(at(61))  # on-time pane of [0, 60)
        .add_elements([record("d", 70, value=8)])  # next window: the stream was never blocked
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(streaming=True)
    with beam.Pipeline(runner=direct_runner(streaming=True), options=options) as p:
        outputs = p | timeline | StreamingAnalytics(AnalyticsConfig(window=SPEC, streaming=True))
        assert_that(
            outputs[AGGREGATES]
            | beam.Map(lambda r: (r["window_start"], r["pane_timing"], r["event_count"], r["value_sum"])),
            equal_to([("2024-01-01T00:00:00Z", "ON_TIME", 3, 7.0), ("2024-01-01T00:01:00Z", "ON_TIME", 1, 8.0)]),
            label="Aggregates",
        )
        assert_that(
            outputs[DEAD_LETTERS]
            | "Summary"
            >> beam.Map(
                lambda r: (r["error_code"], r["stage"], dl.original_payload(r), r["error_message"].split(":")[0])
            ),
            equal_to([("processing_error", stage, poison.payload, f"{step} failed")]),
            label="DeadLetters",
        )


@pytest.mark.parametrize("stage", ["event_time", "dedup"])
def test_poison_record_in_a_batch_run(stage: str, monkeypatch) -> None:
    """Bounded input record by record: the group-by dedup (a group of records per event_id), the event-time step."""
    module, name, predicate, step = STEPS[stage]
    monkeypatch.setattr(module, name, poisoned(getattr(module, name), predicate))
    poison = record("poison", POISON_SECONDS, value=1000)
    records = [record("a", 10, value=1), poison, record("b", 20, value=2), record("d", 70, value=8)]
    with beam.Pipeline(runner=direct_runner(streaming=False)) as p:
        outputs = p | beam.Create(records) | StreamingAnalytics(AnalyticsConfig(window=SPEC, batched=False))
        assert_that(
            outputs[AGGREGATES] | beam.Map(lambda r: (r["window_start"], r["event_count"], r["value_sum"])),
            equal_to([("2024-01-01T00:00:00Z", 2, 3.0), ("2024-01-01T00:01:00Z", 1, 8.0)]),
            label="Aggregates",
        )
        assert_that(
            outputs[DEAD_LETTERS] | "Summary" >> beam.Map(lambda r: (r["stage"], dl.original_payload(r))),
            equal_to([(stage, poison.payload)]),
            label="DeadLetters",
        )


def is_poison_valid(valid: list) -> bool:
    return any(v[1] == "poison" for v in valid)


def is_poison_row(rows: list, _horizon_us: int) -> bool:
    return any(row[0] == "poison" for row in rows)


# Bounded input in batches (transforms/batched.py): where the poison throws there.
BATCHED_STEPS = {
    "event_time": (batched, "rows_of", is_poison_valid),
    "dedup": (batched, "keep_first_per_horizon", is_poison_row),
}


@pytest.mark.parametrize("stage", sorted(BATCHED_STEPS))
def test_poison_record_in_a_batched_run(stage: str, monkeypatch) -> None:
    """Bounded input in batches: the batch is retried record by record (id by id in dedup) and only the poison
    record is dead-lettered. Dedup's compact rows carry no payload: that dead letter describes the row instead."""
    module, name, predicate = BATCHED_STEPS[stage]
    monkeypatch.setattr(module, name, poisoned(getattr(module, name), predicate))
    poison = record("poison", POISON_SECONDS, value=1000)
    records = [record("a", 10, value=1), poison, record("b", 20, value=2), record("d", 70, value=8)]
    with beam.Pipeline(runner=direct_runner(streaming=False)) as p:
        outputs = (
            p | beam.Create([RecordBatch.of(r) for r in records]) | StreamingAnalytics(AnalyticsConfig(window=SPEC))
        )
        assert_that(
            outputs[AGGREGATES] | beam.Map(lambda r: (r["window_start"], r["event_count"], r["value_sum"])),
            equal_to([("2024-01-01T00:00:00Z", 2, 3.0), ("2024-01-01T00:01:00Z", 1, 8.0)]),
            label="Aggregates",
        )
        expected = poison.payload if stage == "event_time" else None
        assert_that(
            outputs[DEAD_LETTERS]
            | "Summary"
            >> beam.Map(
                lambda r: (
                    r["error_code"],
                    r["stage"],
                    dl.original_payload(r),
                    "poison" in str(r["source_metadata"]) or r["payload"] is not None,
                )
            ),
            equal_to([("processing_error", stage, expected, True)]),
            label="DeadLetters",
        )


@pytest.mark.parametrize("stage", ["parse", "validate"])
def test_poison_record_in_batched_parse_and_validate(stage: str, monkeypatch) -> None:
    """The batch's fast path and then the reference throw for one record: the batch is retried record by record
    with the reference, and that record alone is a processing_error dead letter, with its original bytes."""

    def is_poison_payloads(_self: Any, payloads: list) -> bool:
        return any(b"poison" in payload for payload in payloads)

    monkeypatch.setattr(
        fast_json.FastJsonValidator,
        "validate_batch",
        poisoned(fast_json.FastJsonValidator.validate_batch, is_poison_payloads),
    )
    if stage == "parse":
        monkeypatch.setattr(
            batched, "parse_record", poisoned(batched.parse_record, lambda r, *_: b"poison" in r.payload)
        )
    else:
        monkeypatch.setattr(
            EventValidator, "validate", poisoned(EventValidator.validate, lambda _v, _o, r, *_: b"poison" in r.payload)
        )
    poison = record("poison", POISON_SECONDS, value=1000)
    records = [record("a", 10, value=1), poison, record("b", 20, value=2), record("d", 70, value=8)]
    with beam.Pipeline(runner=direct_runner(streaming=False)) as p:
        batches = [RecordBatch("test", [r.payload for r in records])]
        outputs = p | beam.Create(batches) | StreamingAnalytics(AnalyticsConfig(window=SPEC))
        assert_that(
            outputs[AGGREGATES] | beam.Map(lambda r: (r["window_start"], r["event_count"], r["value_sum"])),
            equal_to([("2024-01-01T00:00:00Z", 2, 3.0), ("2024-01-01T00:01:00Z", 1, 8.0)]),
            label="Aggregates",
        )
        assert_that(
            outputs[DEAD_LETTERS]
            | "Summary" >> beam.Map(lambda r: (r["error_code"], r["stage"], dl.original_payload(r))),
            equal_to([("processing_error", stage, poison.payload)]),
            label="DeadLetters",
        )
