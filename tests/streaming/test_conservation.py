"""End to end through the CLI: every record is accounted for, and batch and streaming agree.

Conservation: records read = sum of event_count over each window's final pane (highest pane_index)
+ dead letters + duplicates.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from pipelines.streaming_analytics import run
from pipelines.summary import RunSummary, final_panes
from transforms.io.synthetic import generate, parse_synthetic_uri

MIX = "events=1500&rate=0.5&keys=5&users=120&event_types=3&bad=0.05&duplicates=0.05&late=0.05&seed=11"


def _run(tmp_path: Path, name: str, *args: str) -> RunSummary:
    return run(
        [
            f"--sink={tmp_path / name / 'aggregates'}",
            f"--dead_letter_sink={tmp_path / name / 'dead_letter'}",
            "--allowed_lateness=600",
            *args,
        ]
    )


def _conservation(summary: RunSummary) -> tuple[int, int, int, int]:
    read = summary.counters["records_read"]
    aggregated = sum(row["event_count"] for row in final_panes(summary.aggregate_rows).values())
    return read, aggregated, len(summary.dead_letter_rows), summary.counters.get("duplicates", 0)


def _final_aggregates(summary: RunSummary) -> dict[tuple, tuple]:
    return {
        group: (row["event_count"], row["value_sum"], row["distinct_users"], row["distinct_users_sketch"])
        for group, row in final_panes(summary.aggregate_rows).items()
    }


def test_streaming_replay_conserves_every_record_including_too_late(tmp_path):
    summary = _run(tmp_path, "stream", f"--source=synthetic://?mode=replay&{MIX}&too_late=0.03&too_late_by=1200")
    read, aggregated, dead, duplicates = _conservation(summary)
    assert read == 1500
    assert read == aggregated + dead + duplicates
    codes = Counter(row["error_code"] for row in summary.dead_letter_rows)
    assert codes["too_late"] == summary.counters["too_late"] > 0
    assert duplicates > 0 and codes["malformed_json"] > 0
    timings = Counter(row["pane_timing"] for row in summary.aggregate_rows)
    assert timings["EARLY"] > 0 and timings["ON_TIME"] > 0 and timings["LATE"] > 0
    assert summary.conserved()


@pytest.mark.parametrize("workers", [1, 2])
def test_batch_file_run_conserves_every_record(tmp_path, workers):
    source = tmp_path / "events.jsonl"
    source.write_bytes(
        b"".join(payload + b"\n" for _, _, payload in generate(parse_synthetic_uri(f"synthetic://?{MIX}")))
    )
    summary = _run(tmp_path, "batch", f"--source={source}", f"--direct_num_workers={workers}")
    read, aggregated, dead, duplicates = _conservation(summary)
    assert read == 1500 == aggregated + dead + duplicates
    assert {row["pane_timing"] for row in summary.aggregate_rows} == {"ON_TIME"}
    assert all(row["is_last_pane"] for row in summary.aggregate_rows)


def test_batch_and_streaming_give_the_same_final_aggregates(tmp_path):
    # Same records: a JSON-lines file read in batch, and the same stream replayed on a simulated clock (with
    # late records, duplicates and bad records, but nothing beyond the allowed lateness).
    spec_uri = f"synthetic://?{MIX}"
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(payload + b"\n" for _, _, payload in generate(parse_synthetic_uri(spec_uri))))
    batch = _run(tmp_path, "batch", f"--source={source}")
    streaming = _run(tmp_path, "stream", f"{spec_uri.replace('synthetic://?', '--source=synthetic://?mode=replay&')}")

    assert streaming.counters["records_read"] == batch.counters["records_read"] == 1500
    assert _final_aggregates(streaming) == _final_aggregates(batch)
    assert Counter(r["error_code"] for r in streaming.dead_letter_rows) == Counter(
        r["error_code"] for r in batch.dead_letter_rows
    )
    assert streaming.counters["duplicates"] == batch.counters["duplicates"]
    # The streaming run really was a stream: results were revised by early and late panes along the way.
    assert {r["pane_timing"] for r in streaming.aggregate_rows} >= {"EARLY", "ON_TIME", "LATE"}
