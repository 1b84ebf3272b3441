"""The real-time synthetic stream (PeriodicImpulse; what portable runners run for ``--streaming``)."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that

from transforms.io.synthetic import ReadSynthetic, as_replay, parse_synthetic_uri
from transforms.timefmt import now_us


def test_generates_rate_records_per_second_for_the_duration_stamped_by_wall_clock():
    started_us = now_us()

    def check(stamped):
        sequences = [seq for seq, _ in stamped]
        assert len(sequences) == len(set(sequences)) == 3 * 20  # three ticks of 20 records
        for _, arrival_us in stamped:
            assert started_us <= arrival_us <= started_us + 10_000_000

    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        records = p | ReadSynthetic("synthetic://?rate=20&duration=3&bad=0.1", streaming=True)
        stamped = records | beam.FlatMap(
            lambda b: [(m["sequence"], t) for m, t in zip(b.metadata, b.arrivals, strict=True)]
        )
        assert_that(stamped, check)


def test_as_replay_keeps_parameters_and_sets_replay_mode():
    spec = parse_synthetic_uri(as_replay("synthetic://demo?events=10&rate=2&mode="))
    assert (spec.mode, spec.events, spec.rate) == ("replay", 10, 2.0)
