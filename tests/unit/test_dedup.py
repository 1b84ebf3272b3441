"""DeduplicateEvents: one rule (``is_duplicate``), batch (FnApiRunner) and streaming (TestStream), counted."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipelines.runners import fix_streaming_direct_runner_metrics
from pipelines.summary import counters
from transforms.dedup import UNIQUE, DeduplicateEvents, is_duplicate
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.records import Event, EventCoder

S = 1_000_000
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
HORIZON_S = 600


def ev(event_id: str, seconds: float, user: str = "u", payload: bytes = b"{}") -> Event:
    t = T0 + int(seconds * S)
    return Event(event_id, "click", user, t, None, 1, None, None, payload, "test", None, t)


def stamped(event: Event) -> beam.window.TimestampedValue:
    return beam.window.TimestampedValue(event, Timestamp(micros=event.event_time_us))


def summary(event: Event) -> tuple[str, float, str]:
    return event.event_id, (event.event_time_us - T0) / S, event.user_id


def test_namespace():
    assert METRICS_NAMESPACE == "realtime_analytics"


@pytest.mark.parametrize(
    ("first", "later", "horizon", "duplicate"),
    [
        (None, 0, 10, False),  # never seen
        (100, 100, 10, True),  # same instant
        (100, 110, 10, True),  # exactly at the horizon: inclusive
        (100, 90, 10, True),  # earlier event time, within the horizon
        (100, 111, 10, False),  # just beyond
        (100, 89, 10, False),  # just beyond, earlier
        (100, 100, 0, True),  # horizon 0: only the same instant
        (100, 101, 0, False),
        (0, 0, 0, True),  # a first-seen time of 0 is still "seen"
    ],
)
def test_is_duplicate_rule(first, later, horizon, duplicate):
    assert is_duplicate(first, later, horizon) is duplicate


# Same id within the horizon (dropped), outside it (kept), different ids (kept), repeats of repeats.
EVENTS = [
    ev("a", 0, "first"),
    ev("a", 5, "repeat"),  # within the horizon: dropped
    ev("a", 600, "edge"),  # exactly the horizon after the first: dropped
    ev("b", 0, "b"),
    ev("b", 0, "b-again"),  # dropped
    ev("c", 10, "c"),
    ev("d", 100, "d1"),
    ev("d", 100 + HORIZON_S + 1, "d2"),  # outside the horizon (event time): kept
]
KEPT = [("a", 0.0, "first"), ("b", 0.0, "b"), ("c", 10.0, "c"), ("d", 100.0, "d1"), ("d", 701.0, "d2")]


def _run_batch(events, impl: str):
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    kept = (
        p | beam.Create([stamped(e) for e in events]) | DeduplicateEvents(horizon_s=HORIZON_S, impl=impl, bounded=True)
    )[UNIQUE] | beam.Map(summary)
    return p, kept


@pytest.mark.parametrize("impl", ["auto", "group"])
def test_batch_drops_repeats_within_horizon_and_counts_them(impl):
    # "b-again" has the same event time as "b"; the group implementation keeps the smaller payload on a tie,
    # here both payloads are equal so either copy is the same row.
    events = [e._replace(user_id="b") if e.event_id == "b" else e for e in EVENTS]
    p, kept = _run_batch(events, impl)
    assert_that(kept, equal_to(KEPT))
    result = p.run()
    result.wait_until_finish()
    assert counters(result).get("duplicates") == 3


@pytest.mark.parametrize("impl", ["group", "state"])
def test_batch_order_insensitive_cases_agree_across_implementations(impl):
    # Repeats at the same event time, and a repeat beyond the horizon: every implementation gives the same answer.
    events = [ev("b", 0, "b"), ev("b", 0, "b"), ev("b", 0, "b"), ev("c", 10, "c"), ev("d", 100), ev("d", 701)]
    p, kept = _run_batch(events, impl)
    assert_that(kept, equal_to([("b", 0.0, "b"), ("c", 10.0, "c"), ("d", 100.0, "u"), ("d", 701.0, "u")]))
    result = p.run()
    result.wait_until_finish()
    assert counters(result).get("duplicates") == 2


def test_batch_group_keeps_the_earliest_regardless_of_input_order():
    events = [ev("x", 50, "late-copy"), ev("x", 10, "early-copy"), ev("x", 30, "middle-copy")]
    for ordering in (events, events[::-1]):
        p, kept = _run_batch(ordering, "group")
        assert_that(kept, equal_to([("x", 10.0, "early-copy")]))
        result = p.run()
        result.wait_until_finish()
        assert counters(result).get("duplicates") == 2


def test_batch_different_ids_all_kept():
    events = [ev(f"id-{i}", i % 7) for i in range(200)]
    p, kept = _run_batch(events, "auto")
    assert_that(kept | beam.combiners.Count.Globally(), equal_to([200]))
    result = p.run()
    result.wait_until_finish()
    assert counters(result).get("duplicates", 0) == 0


def _run_stream(stream: test_stream.TestStream, impl: str = "auto"):
    fix_streaming_direct_runner_metrics()
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    kept = (p | stream | DeduplicateEvents(horizon_s=HORIZON_S, impl=impl, bounded=False))[UNIQUE] | beam.Map(summary)
    return p, kept


def test_streaming_drops_repeats_within_horizon_and_counts_them():
    stream = (
        test_stream.TestStream(coder=EventCoder())
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([stamped(e) for e in EVENTS[:3]])
        .advance_watermark_to(Timestamp(micros=T0 + 5 * S))
        .add_elements([stamped(e) for e in EVENTS[3:6]])
        .advance_processing_time(10)
        .add_elements([stamped(EVENTS[6])])
        .advance_watermark_to(Timestamp(micros=T0 + 200 * S))
        .add_elements([stamped(EVENTS[7])])
        # A redelivery of "c" within the horizon, in a later bundle: dropped.
        .add_elements([stamped(ev("c", 12, "c-again"))])
        .advance_watermark_to_infinity()
    )
    p, kept = _run_stream(stream)
    assert_that(kept, equal_to(KEPT))
    result = p.run()
    result.wait_until_finish()
    assert counters(result).get("duplicates") == 4


def test_streaming_state_expires_after_the_horizon():
    # Once the watermark passes first-seen + horizon, the id's state is gone: a new event with that id (outside the
    # horizon by event time) is kept, and a repeat of *that* one is dropped again.
    stream = (
        test_stream.TestStream(coder=EventCoder())
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([stamped(ev("z", 0, "z1"))])
        .advance_watermark_to(Timestamp(micros=T0 + (HORIZON_S + 100) * S))
        .add_elements([stamped(ev("z", HORIZON_S + 200, "z2"))])
        .add_elements([stamped(ev("z", HORIZON_S + 250, "z2-again"))])
        .add_elements([stamped(ev("y", HORIZON_S + 200, "y"))])
        .advance_watermark_to_infinity()
    )
    p, kept = _run_stream(stream)
    assert_that(kept, equal_to([("z", 0.0, "z1"), ("z", 800.0, "z2"), ("y", 800.0, "y")]))
    result = p.run()
    result.wait_until_finish()
    assert counters(result).get("duplicates") == 1
