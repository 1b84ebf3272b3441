"""The run summary says only what it knows: sliding windows counted once per event, "not available" for sinks it
cannot read, the counts so far after Ctrl-C."""

from __future__ import annotations

import pytest

from pipelines.streaming_analytics import run
from pipelines.summary import NOT_AVAILABLE, RunSummary, final_panes
from transforms.io.synthetic import generate, parse_synthetic_uri

MIX = "synthetic://?events=2000&keys=5&users=150&bad=0.03&duplicates=0.03&seed=5"


@pytest.fixture(scope="module")
def sliding(tmp_path_factory) -> RunSummary:
    """The README's own example: sliding windows of 300 s every 60 s, on a file of 2000 records."""
    tmp = tmp_path_factory.mktemp("sliding")
    source = tmp / "events.jsonl"
    source.write_bytes(b"".join(payload + b"\n" for _, _, payload in generate(parse_synthetic_uri(MIX))))
    return run(
        [
            f"--source={source}",
            f"--sink={tmp / 'out' / 'aggregates'}",
            f"--dead_letter_sink={tmp / 'out' / 'dead_letter'}",
            "--window=sliding",
            "--window_size=300",
            "--window_period=60",
        ]
    )


def _line(text: str, label: str) -> str:
    (line,) = [line for line in text.splitlines() if line.strip().startswith(label)]
    return line


def test_sliding_windows_count_each_event_once(sliding):
    c = sliding.counters
    assert sliding.windows_per_event == 5
    in_windows = sum(row["event_count"] for row in final_panes(sliding.aggregate_rows).values())
    assert in_windows == 5 * sliding.aggregated_events  # each event is in 5 windows ...
    assert c["records_read"] == 2000  # ... and counted once
    assert sliding.aggregated_events == c["events_valid"] - c["duplicates"]
    assert sliding.conserved()
    text = sliding.render()
    assert _line(text, "conservation").endswith(
        f"2000 read = {sliding.aggregated_events} aggregated + {sliding.dead_letters} dead letters + "
        f"{c['duplicates']} duplicates: ok"
    )
    assert "each event once: sliding windows hold it 5 times" in _line(text, "aggregated events")


def test_sliding_windows_top_keys_count_each_event_once(sliding):
    text = sliding.render().split("top event_type / key by events:")[1].split("files:")[0]
    top = {line.rsplit(None, 1)[0].strip(): int(line.rsplit(None, 1)[1]) for line in text.strip().splitlines()}
    per_group: dict[str, int] = {}
    for row in final_panes(sliding.aggregate_rows).values():
        name = f"{row['event_type']} / {row['key']}"
        per_group[name] = per_group.get(name, 0) + row["event_count"]
    for name, count in top.items():
        assert count * 5 == per_group[name]
    assert sum(top.values()) <= sliding.aggregated_events


COUNTERS = {
    "records_read": 100,
    "events_valid": 90,
    "duplicates": 5,
    "dead_letters": 10,
    "dead_letters_invalid_value": 6,
    "dead_letters_malformed_json": 4,
    "dead_letters_stage_validate": 6,
    "aggregate_rows": 42,
}


def test_sinks_it_cannot_read_are_not_available_not_zero():
    summary = RunSummary(
        3.0,
        "PrismRunner, streaming",
        dict(COUNTERS),
        remote_sinks=["bigquery://p-roject.ds.aggregates", "kafka://127.0.0.1:9092/dlq"],
        remote_aggregates=True,
        remote_dead_letters=True,
    )
    text = summary.render()
    assert _line(text, "aggregated events").split()[2:4] == NOT_AVAILABLE.split()
    assert _line(text, "windows").split()[1:3] == NOT_AVAILABLE.split()
    assert _line(text, "aggregate rows").split()[2] == "42" and "counted by the pipeline" in text
    assert _line(text, "dead letters").split()[2] == "10"  # the pipeline's own count, said as such
    assert _line(text, "invalid_value").split()[1] == "6" and "stage_validate" not in text
    assert "not checked here" in _line(text, "conservation")
    assert "top event_type" not in text  # nothing to rank: the rows are not here


def test_a_remote_dead_letter_sink_with_local_aggregates():
    rows = [
        {"window_start": "a", "window_end": "b", "event_type": "click", "key": "k", "event_count": 85, "pane_index": 0}
    ]
    rows[0]["pane_timing"] = "ON_TIME"
    summary = RunSummary(
        1.0,
        "DirectRunner, streaming",
        dict(COUNTERS),
        aggregate_rows=rows,
        remote_sinks=["pubsub://projects/my-project/topics/dlq"],
        remote_dead_letters=True,
    )
    text = summary.render()
    assert _line(text, "aggregated events").split()[2] == "85"
    assert _line(text, "dead letters").split()[2] == "10"
    assert "not checked here: dead letters went to pubsub://" in _line(text, "conservation")


def test_a_stopped_run_says_so_and_checks_nothing():
    summary = RunSummary(7.5, "DirectRunner, streaming", dict(COUNTERS), interrupted=True)
    text = summary.render()
    assert text.splitlines()[0] == "realtime-analytics: stopped (Ctrl-C) after 7.5 s (DirectRunner, streaming)"
    assert "MISMATCH" not in text and "not checked" in _line(text, "conservation")


def test_counters_a_runner_did_not_give_are_not_available():
    summary = RunSummary(5.0, "FlinkRunner, streaming", {}, interrupted=True, counters_known=False)
    text = summary.render()
    assert _line(text, "records read").split()[2:4] == NOT_AVAILABLE.split()
    assert "only when the job ends" in _line(text, "records read")
    assert _line(text, "valid events").split()[2:4] == NOT_AVAILABLE.split()
    assert "not checked (the runner gave no counters)" in _line(text, "conservation")
