"""The main job on Beam's FlinkRunner with the embedded Flink of the job server (``--flink_master=[local]``).

No extra flags: ``pipelines/runners.py`` passes the job server it assembled from Maven Central
(pipelines/local_run/jars.py) and
Beam downloads nothing. Batch on a synthetic source must give exactly what the direct runner gives; batch on a file
gives the exact aggregates and dead letters of a known mix; a streaming synthetic source (PeriodicImpulse, real time)
accounts for every record once, with one row per pane.
"""

from __future__ import annotations

from collections import Counter

import pytest

from pipelines.streaming_analytics import run
from pipelines.summary import RunSummary
from tests.integration.event_mix import MINUTE_US, as_json, event_fields, expected_finals, mix, recent_window
from tests.integration.results import final_counts
from transforms.timefmt import format_rfc3339_us

FLINK = ["--runner=FlinkRunner", "--flink_master=[local]"]
SYNTHETIC = "synthetic://?events=3000&bad=0.03&duplicates=0.03&late=0.02&seed=11"


def _argv(tmp_path, source: str, *extra: str) -> list[str]:
    return [f"--source={source}", f"--sink={tmp_path / 'agg'}", f"--dead_letter_sink={tmp_path / 'dlq'}", *extra]


def _comparable(rows: list[dict], volatile: str) -> Counter:
    return Counter(tuple(sorted((k, str(v)) for k, v in row.items() if k != volatile)) for row in rows)


@pytest.fixture(scope="module")
def batch(tmp_path_factory) -> tuple[RunSummary, RunSummary]:
    direct = run(_argv(tmp_path_factory.mktemp("direct"), SYNTHETIC))
    flink = run(_argv(tmp_path_factory.mktemp("flink"), SYNTHETIC, *FLINK))
    return direct, flink


def test_batch_on_flink_gives_exactly_what_the_direct_runner_gives(batch):
    direct, flink = batch
    assert flink.mode == "FlinkRunner, batch"
    assert flink.counters == direct.counters
    assert flink.counters["records_read"] == 3000
    assert _comparable(flink.aggregate_rows, "emitted_at") == _comparable(direct.aggregate_rows, "emitted_at")
    assert _comparable(flink.dead_letter_rows, "failed_at") == _comparable(direct.dead_letter_rows, "failed_at")
    assert flink.conserved()


def test_batch_file_on_flink_gives_the_exact_aggregates_and_dead_letters(tmp_path):
    window_a = recent_window()
    valid, bad = mix("json", window_a)
    late = as_json(event_fields("late1", window_a - 30 * MINUTE_US, "u9", 99))
    del bad[late]  # bounded input is all on time: the far-late event is aggregated in its own window
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join([*valid, valid[0], late, *bad]) + b"\n")

    summary = run(_argv(tmp_path, str(source), *FLINK))

    expected = expected_finals(window_a)
    expected[(format_rfc3339_us(window_a - 30 * MINUTE_US), "click", "/home")] = (1, 99.0, 1)
    assert final_counts(summary.aggregate_rows) == expected
    assert Counter(row["error_code"] for row in summary.dead_letter_rows) == Counter(bad.values())
    assert summary.counters["duplicates"] == 1
    assert summary.conserved()


def assert_late_panes_only_with_late_data(rows: list[dict]) -> None:
    """A LATE pane carries events its window got after the pane before it: never a repeat (a window that closes
    without late data emits no closing pane, so its final pane is the highest pane_index, not one flagged last)."""
    by_window: dict[tuple, list[dict]] = {}
    for row in rows:
        by_window.setdefault((row["window_start"], row["event_type"], row["key"]), []).append(row)
    for panes in by_window.values():
        panes.sort(key=lambda row: row["pane_index"])
        for before, pane in zip(panes, panes[1:], strict=False):
            if pane["pane_timing"] == "LATE":
                assert pane["event_count"] > before["event_count"], (before, pane)


def test_streaming_synthetic_on_flink_accounts_for_every_record(tmp_path):
    rate, seconds = 40, 12
    source = f"synthetic://?rate={rate}&duration={seconds}&bad=0.05&duplicates=0.05&late=0.05&seed=5"
    summary = run(_argv(tmp_path, source, "--streaming", "--early_firing=2", "--window_size=5", *FLINK))

    assert summary.mode == "FlinkRunner, streaming"
    read = summary.counters["records_read"]
    assert read % rate == 0 and read >= (seconds - 2) * rate  # whole ticks of `rate` records, one per second
    assert summary.counters["duplicates"] > 0 and summary.dead_letter_rows
    assert summary.conserved()
    panes = Counter((r["window_start"], r["event_type"], r["key"], r["pane_index"]) for r in summary.aggregate_rows)
    assert set(panes.values()) == {1}  # one row per pane: no repeated or empty pane
    assert all(row["event_count"] > 0 for row in summary.aggregate_rows)
    assert_late_panes_only_with_late_data(summary.aggregate_rows)
