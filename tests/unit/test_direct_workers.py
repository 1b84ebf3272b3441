"""Batch on the direct runner: large bounded input runs on every core unless --direct_num_workers says otherwise."""

from __future__ import annotations

from apache_beam.options.pipeline_options import DirectOptions

from pipelines import runners
from pipelines.spec import resolve


def direct(argv: list[str]) -> tuple[int, str]:
    spec = resolve(argv)
    view = runners.beam_options(spec.runner, spec.argv).view_as(DirectOptions)
    return view.direct_num_workers, view.direct_running_mode


def test_input_size_of_files_and_synthetic_sources(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(b"x" * 100)
    (tmp_path / "b.jsonl").write_bytes(b"x" * 50)
    assert runners.bounded_input_bytes(str(tmp_path / "*.jsonl")) == 150
    assert runners.bounded_input_bytes(f"file://{tmp_path}/a.jsonl") == 100
    assert runners.bounded_input_bytes("synthetic://?events=1000") == 1000 * 150
    assert runners.bounded_input_bytes("synthetic://?mode=replay&events=1000") is None
    assert runners.bounded_input_bytes("gs://bucket/*.jsonl") is None
    assert runners.bounded_input_bytes("pubsub://projects/p/topics/t") is None


def test_large_input_uses_every_core_small_input_stays_in_process(monkeypatch):
    monkeypatch.setattr(runners.os, "cpu_count", lambda: 2)
    assert direct(["--source=synthetic://?events=1000"]) == (1, "in_memory")
    assert direct(["--source=synthetic://?events=5000000"]) == (0, "multi_processing")  # Beam: 0 = one per core
    assert resolve(["--source=synthetic://?events=5000000"]).runner.every_core
    monkeypatch.setattr(runners.os, "cpu_count", lambda: 1)
    assert direct(["--source=synthetic://?events=5000000"]) == (1, "in_memory")


def test_an_explicit_worker_count_is_kept():
    for argv in (["--direct_num_workers=1"], ["--direct_num_workers", "1"]):
        assert direct(["--source=synthetic://?events=5000000", *argv]) == (1, "in_memory")
    assert not resolve(["--source=synthetic://?events=5000000", "--direct_num_workers=2"]).runner.every_core
