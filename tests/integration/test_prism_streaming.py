"""The main job streaming on Prism from the synthetic source (PeriodicImpulse, real time), to its end.

When the source stops, the watermark goes to the end of time and every window closes. Prism fires a closing pane
for every window and group that repeats the last one (it ignores the windowing strategy's closing behaviour); the
pipeline emits a LATE pane only when late data arrived, so none of those reach the sink, and every record is
accounted for once.
"""

from __future__ import annotations

from collections import Counter

import pytest

from pipelines.streaming_analytics import run
from tests.integration.results import assert_late_panes_only_with_late_data

pytestmark = pytest.mark.integration


def test_a_stream_that_ends_on_prism_has_no_repeated_late_pane(tmp_path):
    rate, seconds = 40, 10
    source = f"synthetic://?rate={rate}&duration={seconds}&bad=0.05&duplicates=0.05&late=0&seed=3"
    summary = run(
        [
            f"--source={source}",
            f"--sink={tmp_path / 'agg'}",
            f"--dead_letter_sink={tmp_path / 'dlq'}",
            "--runner=PrismRunner",
            "--streaming",
            "--window_size=5",
            "--early_firing=2",
            "--allowed_lateness=0",
        ]
    )
    assert summary.counters["records_read"] >= (seconds - 2) * rate
    assert summary.conserved()
    panes = Counter((r["window_start"], r["event_type"], r["key"], r["pane_index"]) for r in summary.aggregate_rows)
    assert set(panes.values()) == {1}  # one row per pane
    assert_late_panes_only_with_late_data(summary.aggregate_rows)
    timings = Counter(row["pane_timing"] for row in summary.aggregate_rows)
    assert timings["ON_TIME"] > 0
