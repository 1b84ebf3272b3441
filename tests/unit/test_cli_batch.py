"""The CLI in batch on a synthetic source: counters agree with the files and with an independent recount of the
generated records, every record is accounted for once, each window/group has one final ON_TIME pane."""

from __future__ import annotations

import base64
import math
from collections import Counter, defaultdict
from fractions import Fraction

import pytest

from pipelines.streaming_analytics import main, run
from pipelines.summary import RunSummary, read_rows
from transforms.dead_letter import Rejection
from transforms.io.synthetic import generate, parse_synthetic_uri
from transforms.parse import decode_json
from transforms.records import SourceRecord
from transforms.sketch import DistinctSketch
from transforms.timefmt import format_rfc3339_us
from transforms.validate import EventValidator

SOURCE = "synthetic://?events=3000&bad=0.03&duplicates=0.03"
WINDOW_US = 60_000_000


def _argv(tmp_path, *extra: str) -> list[str]:
    return [
        f"--source={SOURCE}",
        f"--sink={tmp_path / 'out' / 'agg'}",
        f"--dead_letter_sink={tmp_path / 'out' / 'dlq'}",
        *extra,
    ]


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> RunSummary:
    return run(_argv(tmp_path_factory.mktemp("cli_batch")))


@pytest.fixture(scope="module")
def recount():
    """What the run must find, recomputed without Beam from the generator and the contract's functions."""
    validator = EventValidator()
    dead: Counter = Counter()
    duplicates = 0
    seen_ids: set[str] = set()
    groups: dict[tuple, list] = defaultdict(list)
    for _, arrival, payload in generate(parse_synthetic_uri(SOURCE)):
        result = decode_json(payload)
        if not isinstance(result, Rejection):
            result = validator.validate(result, SourceRecord(payload, "synthetic"), arrival)
        if isinstance(result, Rejection):
            dead[result.code] += 1
            continue
        if result.event_id in seen_ids:  # synthetic duplicates are redeliveries: same bytes, same event time
            duplicates += 1
            continue
        seen_ids.add(result.event_id)
        start = result.event_time_us - result.event_time_us % WINDOW_US
        groups[(format_rfc3339_us(start), format_rfc3339_us(start + WINDOW_US), result.event_type, result.key)].append(
            result
        )
    return dead, duplicates, groups


def test_counters_match_the_generated_records(summary, recount):
    dead, duplicates, groups = recount
    c = summary.counters
    assert c["records_read"] == 3000
    assert c["duplicates"] == duplicates > 0
    assert c["events_valid"] == 3000 - sum(dead.values())
    assert c["dead_letters"] == sum(dead.values()) == len(summary.dead_letter_rows) > 0
    assert {k[len("dead_letters_") :]: v for k, v in c.items() if k.startswith("dead_letters_")} == dict(dead)
    assert Counter(r["error_code"] for r in summary.dead_letter_rows) == dead
    assert c["aggregate_rows"] == len(summary.aggregate_rows) == len(groups)
    assert c.get("too_late", 0) == 0  # batch: nothing is late


def test_counters_are_consistent_with_the_files(summary):
    # The summary's rows are exactly what the files hold.
    for files, rows in (
        (summary.aggregate_files, summary.aggregate_rows),
        (summary.dead_letter_files, summary.dead_letter_rows),
    ):
        assert files
        prefix = files[0].rsplit("-", 2)[0]
        assert read_rows(prefix) == (files, rows)


def test_conservation_and_one_final_pane_per_group(summary):
    c = summary.counters
    rows = summary.aggregate_rows
    assert {(r["pane_timing"], r["pane_index"], r["is_last_pane"]) for r in rows} == {("ON_TIME", 0, True)}
    groups = Counter((r["window_start"], r["window_end"], r["event_type"], r["key"]) for r in rows)
    assert set(groups.values()) == {1}
    aggregated = sum(r["event_count"] for r in summary.finals.values())
    assert aggregated == sum(r["event_count"] for r in rows)
    assert c["records_read"] == aggregated + len(summary.dead_letter_rows) + c["duplicates"]
    assert c["events_valid"] == aggregated + c["duplicates"]
    assert summary.conserved()


def test_aggregates_match_an_independent_recount(summary, recount):
    _, _, groups = recount
    rows = {(r["window_start"], r["window_end"], r["event_type"], r["key"]): r for r in summary.aggregate_rows}
    assert set(rows) == set(groups)
    for group, events in groups.items():
        row = rows[group]
        assert row["event_count"] == len(events)
        assert row["value_sum"] == float(sum(Fraction(e.value) for e in events))
        exact_users = len({e.user_id for e in events})
        assert abs(row["distinct_users"] - exact_users) <= max(1, 0.02 * exact_users)
        assert (
            DistinctSketch.from_bytes(base64.b64decode(row["distinct_users_sketch"])).estimate()
            == (row["distinct_users"])
        )
        assert math.isfinite(row["value_sum"])


def test_render_has_the_key_lines(summary):
    text = summary.render()
    c = summary.counters
    lines = text.splitlines()
    assert lines[0].startswith("realtime-analytics: run finished in ") and "batch" in lines[0]

    def number_after(label: str) -> int:
        (line,) = [line for line in lines if line.strip().startswith(label)]
        return int(line.strip()[len(label) :].split()[0])

    assert number_after("records read") == 3000
    assert number_after("valid events") == c["events_valid"]
    assert number_after("duplicates dropped") == c["duplicates"]
    assert number_after("dead letters") == len(summary.dead_letter_rows)
    assert number_after("aggregated events") == summary.aggregated_events
    assert number_after("aggregate rows") == len(summary.aggregate_rows)
    for code, count in Counter(r["error_code"] for r in summary.dead_letter_rows).items():
        assert number_after(code) == count
    (conservation,) = [line for line in lines if "conservation" in line]
    assert conservation.rstrip().endswith(": ok")
    assert f"3000 read = {summary.aggregated_events} aggregated" in conservation
    for path in summary.aggregate_files + summary.dead_letter_files:
        assert path in text


def test_a_second_run_to_the_same_prefixes_replaces_the_first(tmp_path):
    first = run(_argv(tmp_path))
    second = run(_argv(tmp_path))
    assert second.counters == first.counters
    key = sorted
    strip = [{k: v for k, v in r.items() if k != "emitted_at"} for r in second.aggregate_rows]
    assert key(map(str, strip)) == key(
        str({k: v for k, v in r.items() if k != "emitted_at"}) for r in first.aggregate_rows
    )
    assert len(second.dead_letter_rows) == len(first.dead_letter_rows)
    assert second.conserved()
    assert set(first.aggregate_files).isdisjoint(second.aggregate_files)  # the first run's files were removed


def test_main_prints_the_summary(tmp_path, capsys):
    assert main(_argv(tmp_path)) == 0
    captured = capsys.readouterr()
    assert "records read" in captured.out and ": ok" in captured.out
    assert "Traceback" not in captured.err


def test_synthetic_avro_through_the_cli(tmp_path):
    source = "synthetic://?events=800&format=avro&bad=0.05&duplicates=0.03&seed=8"
    summary = run(
        ["--format=avro", f"--source={source}", f"--sink={tmp_path / 'agg'}", f"--dead_letter_sink={tmp_path / 'dlq'}"]
    )
    c = summary.counters
    assert c["records_read"] == 800
    assert c["duplicates"] > 0 and summary.dead_letter_rows
    assert {r["error_code"] for r in summary.dead_letter_rows} <= {"malformed_avro", "invalid_encoding"}
    assert summary.conserved()
