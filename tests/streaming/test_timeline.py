"""Event-time timelines: early, on-time and late panes, too-late data in the dead letter, sessions, sliding.

Each test reads as the stream it replays. Times are seconds after T0 = 2024-01-01T00:00:00Z; a record's arrival
time is the watermark at the moment it is added (TestStream's default timestamp).
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.runners import direct_runner
from tests.streaming.timeline import at, iso, pane, per_window, record, stream, window, windowed_pane
from transforms.analytics import AGGREGATES, DEAD_LETTERS, AnalyticsConfig, StreamingAnalytics
from transforms.records import SourceRecord
from transforms.windowing import FIXED, SESSION, SLIDING, WindowSpec


def run_timeline(test_stream, spec: WindowSpec, check) -> None:
    """Runs the analytics graph on ``test_stream``; ``check(aggregates, dead_letters)`` adds the assertions."""
    options = PipelineOptions(streaming=True)
    with beam.Pipeline(runner=direct_runner(streaming=True), options=options) as p:
        outputs = p | test_stream | StreamingAnalytics(AnalyticsConfig(window=spec, streaming=True))
        check(outputs[AGGREGATES], outputs[DEAD_LETTERS])


def panes_of(aggregates):
    return aggregates | "Panes" >> beam.Map(pane)


def windowed_panes_of(aggregates):
    return aggregates | "Panes" >> beam.Map(windowed_pane)


def dead_letter_codes(dead_letters):
    return dead_letters | "Codes" >> beam.Map(lambda r: (r["error_code"], r["stage"], r["error_field"]))


def test_fixed_window_early_on_time_late_and_too_late():
    spec = WindowSpec(FIXED, size_s=60, allowed_lateness_s=120, early_firing_s=10)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 10, value=1)])  # on time, window [0, 60)
        .advance_processing_time(11)  # early pane: {a}
        .add_elements([record("b", 20, value=2)])  # on time
        .advance_watermark_to(at(61))  # watermark passes 60: on-time pane {a, b}
        .add_elements([record("c", 30, value=4)])  # late, within allowed lateness: late pane {a, b, c}
        .add_elements([record("e", 70, value=8)])  # on time for [60, 120): the watermark is only at 61
        .advance_watermark_to(at(200))  # [0, 60) expired at 60 + 120 = 180
        .add_elements([record("d", 40, value=16)])  # droppable: too late, to the dead letter
        .advance_watermark_to_infinity()
    )

    def check(aggregates, dead_letters):
        assert_that(
            windowed_panes_of(aggregates),
            per_window(
                {
                    window(0, 60): [
                        (iso(0), "EARLY", 0, 1, 1.0),
                        (iso(0), "ON_TIME", 1, 2, 3.0),
                        (iso(0), "LATE", 2, 3, 7.0),
                    ],
                    window(60, 120): [(iso(60), "ON_TIME", 0, 1, 8.0)],
                }
            ),
            label="PerWindowPanes",
        )
        assert_that(dead_letter_codes(dead_letters), equal_to([("too_late", "window", "event_time")]), label="Dlq")

    run_timeline(timeline, spec, check)


def test_no_early_panes_when_early_firing_is_off():
    spec = WindowSpec(FIXED, size_s=60, allowed_lateness_s=60, early_firing_s=0)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 5), record("b", 6)])  # on time
        .advance_processing_time(120)  # no early trigger: nothing fires
        .advance_watermark_to(at(60))  # on-time pane {a, b}
        .advance_watermark_to_infinity()
    )

    def check(aggregates, dead_letters):
        assert_that(
            windowed_panes_of(aggregates),
            per_window({window(0, 60): [(iso(0), "ON_TIME", 0, 2, 0.0)]}),
        )
        assert_that(dead_letters, equal_to([]), label="NoDeadLetters")

    run_timeline(timeline, spec, check)


def test_exactly_at_the_lateness_boundary_is_still_late_not_too_late():
    spec = WindowSpec(FIXED, size_s=60, allowed_lateness_s=120, early_firing_s=0)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 10)])  # on time
        .advance_watermark_to(at(61))  # on-time pane {a}
        # Beam's model: droppable once window max timestamp (59.999999 s) + lateness < watermark. TestStream's
        # clock has millisecond steps, so 179.999 s is the last instant a late record is still accepted.
        .advance_watermark_to(at(179.999))
        .add_elements([record("b", 20)])  # late, within allowed lateness
        .advance_watermark_to(at(180))
        .add_elements([record("c", 30)])  # too late: 180 > 59.999999 + 120
        .advance_watermark_to_infinity()
    )

    def check(aggregates, dead_letters):
        assert_that(
            windowed_panes_of(aggregates),
            per_window({window(0, 60): [(iso(0), "ON_TIME", 0, 1, 0.0), (iso(0), "LATE", 1, 2, 0.0)]}),
        )
        assert_that(dead_letter_codes(dead_letters), equal_to([("too_late", "window", "event_time")]), label="Dlq")

    run_timeline(timeline, spec, check)


def test_sliding_windows_count_an_event_in_every_window_it_falls_in():
    spec = WindowSpec(SLIDING, size_s=60, period_s=30, allowed_lateness_s=60, early_firing_s=0)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 40), record("b", 70)])  # a in [0,60) and [30,90); b in [30,90) and [60,120)
        .advance_watermark_to_infinity()
    )

    def check(aggregates, dead_letters):
        assert_that(
            windowed_panes_of(aggregates),
            per_window(
                {
                    window(0, 60): [(iso(0), "ON_TIME", 0, 1, 0.0)],
                    window(30, 90): [(iso(30), "ON_TIME", 0, 2, 0.0)],
                    window(60, 120): [(iso(60), "ON_TIME", 0, 1, 0.0)],
                }
            ),
        )

    run_timeline(timeline, spec, check)


def test_sessions_merge_and_a_late_event_extends_a_closed_session():
    spec = WindowSpec(SESSION, gap_s=30, allowed_lateness_s=300, early_firing_s=0)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 0), record("b", 20)])  # one session [0, 50)
        .add_elements([record("c", 100)])  # a second session [100, 130)
        .advance_watermark_to(at(140))  # both sessions close on time
        .add_elements([record("d", 40)])  # late, within lateness: [0, 50) grows to [0, 70)
        .advance_watermark_to_infinity()
    )

    def check(aggregates, dead_letters):
        assert_that(
            windowed_panes_of(aggregates),
            per_window(
                {
                    window(0, 50): [(iso(0), "ON_TIME", 0, 2, 0.0)],
                    window(0, 70): [(iso(0), "LATE", 0, 3, 0.0)],
                    window(100, 130): [(iso(100), "ON_TIME", 0, 1, 0.0)],
                }
            ),
        )

    run_timeline(timeline, spec, check)


@pytest.mark.parametrize("early_firing_s", [0, 10])
def test_duplicates_and_bad_records_in_a_stream(early_firing_s):
    spec = WindowSpec(FIXED, size_s=60, allowed_lateness_s=60, early_firing_s=early_firing_s)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([record("a", 10, value=5)])  # on time
        .add_elements([record("a", 10, value=5)])  # redelivery of a: dropped as a duplicate
        .add_elements([SourceRecord(b'{"event_id": "x", "event_type": ', "test")])  # malformed: stage parse
        .add_elements([record("b", 12, event_type="Bad Type")])  # invalid event_type: stage validate
        .advance_watermark_to(at(60))
        .advance_watermark_to_infinity()
    )

    def check(aggregates, dead_letters):
        # No processing time passes, so even with early firing on there is one (on-time) pane.
        assert_that(panes_of(aggregates), equal_to([(iso(0), "ON_TIME", 0, 1, 5.0)]), label="Count")
        assert_that(
            dead_letter_codes(dead_letters),
            equal_to([("malformed_json", "parse", None), ("invalid_value", "validate", "event_type")]),
            label="Dlq",
        )

    run_timeline(timeline, spec, check)


def test_source_timestamps_replace_the_payload_event_time():
    # --timestamp_source=publish_time (or kafka_timestamp): windows follow arrival, whatever event_time says.
    spec = WindowSpec(FIXED, size_s=60, allowed_lateness_s=0, early_firing_s=0)
    timeline = (
        stream()
        .advance_watermark_to(at(0))
        .add_elements([TimestampedValue(record("a", -5000), at(10))])  # payload says long ago; arrived at 10
        .add_elements([TimestampedValue(record("b", 9000), at(70))])  # payload says far ahead; arrived at 70
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions(streaming=True)
    config = AnalyticsConfig(window=spec, streaming=True, timestamp_source="publish_time")
    with beam.Pipeline(runner=direct_runner(streaming=True), options=options) as p:
        outputs = p | timeline | StreamingAnalytics(config)
        assert_that(
            windowed_panes_of(outputs[AGGREGATES]),
            per_window(
                {window(0, 60): [(iso(0), "ON_TIME", 0, 1, 0.0)], window(60, 120): [(iso(60), "ON_TIME", 0, 1, 0.0)]}
            ),
        )
        assert_that(outputs[DEAD_LETTERS], equal_to([]), label="NothingTooLate")
