"""Poison records in the whole graph: a record that makes a step throw is dead-lettered (processing_error) with the
step's stage and its original bytes, and every other record, before and after it, is aggregated exactly as without
it. One mechanism for every step (transforms/guard.py): the batch that throws is retried record by record.

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
from transforms import dead_letter as dl
from transforms import dedup, event_time, fast_json, parse_validate, windowing
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.records import RecordBatch
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


def _has_poison_row(rows: Any, *_: Any) -> bool:
    return any(row[0] == "poison" for row in rows)


# stage -> (module or class, function, when it throws, the step's name in the message)
STEPS = {
    "parse": (parse_validate, "parse_record", lambda r, *_: b"poison" in r.payload, "ParseEvents"),
    "validate": (EventValidator, "validate", lambda _v, _o, r, *_: b"poison" in r.payload, "ValidateEvents"),
    "event_time": (
        event_time,
        "rows_of",
        lambda _b, valid, *_: any(v[1] == "poison" for v in valid),
        "AssignEventTime",
    ),
    "dedup": (dedup, "is_duplicate", lambda _f, t, _h: t % 1_000_000 == 777_777, "DeduplicateEvents"),
    "window": (windowing, "preaggregate", _has_poison_row, "WindowEvents"),
    "too_late": (windowing, "latest_deadline_us", lambda _w, t, _l: t % 1_000_000 == 777_777, "FilterTooLate"),
}
STAGE = {"too_late": "window"}


def poison_step(stage: str, monkeypatch) -> str:
    owner, name, when, step = STEPS[stage]
    monkeypatch.setattr(owner, name, poisoned(getattr(owner, name), when))
    if stage in ("parse", "validate"):  # the fast path takes the plainly valid records first: make it throw too
        monkeypatch.setattr(
            fast_json.FastJsonValidator,
            "validate_batch",
            poisoned(fast_json.FastJsonValidator.validate_batch, lambda _s, ps: any(b"poison" in p for p in ps)),
        )
    return step


def summaries(dead_letters):
    return dead_letters | "Summary" >> beam.Map(
        lambda r: (r["error_code"], r["stage"], dl.original_payload(r), r["error_message"].split(":")[0])
    )


@pytest.mark.parametrize("stage", sorted(STEPS))
def test_poison_record_is_dead_lettered_and_the_stream_goes_on(stage: str, monkeypatch) -> None:
    step = poison_step(stage, monkeypatch)
    poison = record("poison", POISON_SECONDS, value=1000)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 10, value=1), record("b", 20, value=2)])  # before the poison
        .add_elements([poison, record("c", 40, value=4)])  # the poison throws; c, in its batch, is still counted
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
            summaries(outputs[DEAD_LETTERS]),
            equal_to([("processing_error", STAGE.get(stage, stage), poison.payload, f"{step} failed")]),
            label="DeadLetters",
        )


@pytest.mark.parametrize("stage", sorted(set(STEPS) - {"too_late"}))  # bounded input is never late: no filter
def test_poison_record_in_a_batch_run(stage: str, monkeypatch) -> None:
    step = poison_step(stage, monkeypatch)
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
            summaries(outputs[DEAD_LETTERS]),
            equal_to([("processing_error", stage, poison.payload, f"{step} failed")]),
            label="DeadLetters",
        )
