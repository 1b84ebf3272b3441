"""Transform labels are part of the job's contract with Dataflow `--update`: they change only deliberately.

The golden file lists every full label of the batch and streaming Dataflow graphs. If this test fails, either
the rename was accidental (undo it) or deliberate: read docs/updating-jobs.md, run
`python -m pipelines.release.labels --update`, and ship a `--transform_name_mapping` with the change.
"""

from __future__ import annotations

import pytest

from pipelines.release import labels

# The stable labels promised in docs/design.md.
DESIGNED = {
    "both": [
        "ReadRecords",
        "StreamingAnalytics/BatchRecords",
        "StreamingAnalytics/ParseEvents",
        "StreamingAnalytics/ValidateEvents",
        "StreamingAnalytics/AssignEventTime",
        "StreamingAnalytics/DeduplicateEvents",
        "StreamingAnalytics/WindowEvents",
        "StreamingAnalytics/WindowedAggregates",
        "StreamingAnalytics/CollectDeadLetters",
        "StreamingAnalytics/CountDeadLetters",
        "WriteAggregates",
        "WriteDeadLetters",
    ],
    "streaming": ["StreamingAnalytics/FilterTooLate"],
}


@pytest.fixture(scope="module")
def current() -> list[str]:
    return labels.golden_lines()


def test_labels_match_the_golden_file(current):
    committed = labels.read_golden()
    assert committed, f"{labels.GOLDEN} is missing or empty: python -m pipelines.release.labels --update"
    assert current == committed, (
        "transform labels changed (breaks Dataflow --update without --transform_name_mapping); if deliberate, "
        "run `python -m pipelines.release.labels --update`:\n" + labels.diff(committed, current)
    )


def test_golden_file_is_exactly_what_update_writes(current):
    assert labels.GOLDEN.read_text() == labels.render(current)


def test_designed_stable_labels_are_present(current):
    lines = set(current)
    for variant in labels.VARIANTS:
        for label in DESIGNED["both"]:
            assert f"{variant}: {label}" in lines
    assert "streaming: StreamingAnalytics/FilterTooLate" in lines
    assert "batch: StreamingAnalytics/FilterTooLate" not in lines  # bounded input is never late


def test_labels_are_unique_per_variant(current):
    assert len(current) == len(set(current))
    assert all(": " in line and not line.startswith("#") for line in current)


def test_check_fails_with_a_diff_and_update_rewrites(tmp_path, monkeypatch, capsys, current):
    golden = tmp_path / "golden.txt"
    stale = [line for line in current if "FilterTooLate" not in line] + ["streaming: StreamingAnalytics/Renamed"]
    golden.write_text(labels.render(sorted(stale)))
    monkeypatch.setattr(labels, "GOLDEN", golden)
    monkeypatch.setattr(labels, "ROOT", tmp_path)
    monkeypatch.setattr(labels, "golden_lines", lambda: current)  # one dry run per module is enough

    assert labels.main(["--check"]) == 1
    out = capsys.readouterr()
    assert "-streaming: StreamingAnalytics/Renamed" in out.out
    assert "+streaming: StreamingAnalytics/FilterTooLate" in out.out
    assert "--update" in out.err

    assert labels.main(["--update"]) == 0
    assert golden.read_text() == labels.render(current)
    assert labels.main(["--check"]) == 0


def test_labels_of_any_options_set(capsys):
    assert labels.main(["--streaming", "--source=synthetic://?rate=10"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert "ReadRecords/Synthetic" in printed
    assert "StreamingAnalytics/FilterTooLate" in printed
