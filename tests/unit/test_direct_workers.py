"""Batch on the direct runner: large bounded input runs on every core unless --direct_num_workers says otherwise."""

from __future__ import annotations

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from pipelines import runners
from pipelines.streaming_analytics import _given


def direct(options: PipelineOptions) -> tuple[int, str]:
    view = options.view_as(DirectOptions)
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
    small, large = PipelineOptions([]), PipelineOptions([])
    assert not runners.use_every_core_for_large_input(small, "synthetic://?events=1000")
    assert direct(small) == (1, "in_memory")
    assert runners.use_every_core_for_large_input(large, "synthetic://?events=5000000")
    assert direct(large) == (0, "multi_processing")  # Beam: 0 = one worker per core
    monkeypatch.setattr(runners.os, "cpu_count", lambda: 1)
    assert not runners.use_every_core_for_large_input(PipelineOptions([]), "synthetic://?events=5000000")


def test_an_explicit_worker_count_is_seen():
    assert _given(["--direct_num_workers=1"], "--direct_num_workers")
    assert _given(["--direct_num_workers", "1"], "--direct_num_workers")
    assert not _given(["--direct_num_workers_x=1", "--source=x"], "--direct_num_workers")
