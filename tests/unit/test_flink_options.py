"""Flink's checkpointing, restart and state options: declared once (the option table), refused at start-up with one
line naming the option when wrong, typed for the job server when right, and kept out of the Dataflow template."""

from __future__ import annotations

import pytest

from pipelines import runners
from pipelines.local_run import jars
from pipelines.options import FLINK_OPTIONS, ConfigError
from pipelines.release import template_metadata as tm
from pipelines.spec import resolve
from pipelines.streaming_analytics import main

SAFE = ["--sink=/nonexistent-dir-for-tests/agg", "--dead_letter_sink=/nonexistent-dir-for-tests/dlq"]
FLINK = ["--runner=FlinkRunner", "--flink_master=[local]", "--streaming", "--source=synthetic://?rate=10"]
INTERVAL = "--checkpointing_interval=2000"

BAD = [
    (["--checkpointing_interval=1000"], "--checkpointing_interval", "FlinkRunner"),  # direct runner: would be ignored
    (["--runner=PrismRunner", "--source=x.jsonl", "--state_backend=rocksdb"], "--state_backend", "FlinkRunner"),
    ([*FLINK, "--checkpointing_interval=5"], "--checkpointing_interval", "at least 10"),
    ([*FLINK, "--checkpointing_interval=2s"], "--checkpointing_interval", "whole number"),
    ([*FLINK, "--checkpointing_interval="], "--checkpointing_interval", "whole number"),
    ([*FLINK, "--checkpointing_mode=EXACTLY_ONCE"], "--checkpointing_mode", "needs --checkpointing_interval"),
    ([*FLINK, INTERVAL, "--checkpointing_mode=exactly_once"], "--checkpointing_mode", "EXACTLY_ONCE"),
    ([*FLINK, INTERVAL, "--checkpoint_timeout_millis=0"], "--checkpoint_timeout_millis", "at least 10"),
    ([*FLINK, "--checkpoint_timeout_millis=60000"], "--checkpoint_timeout_millis", "needs"),
    ([*FLINK, INTERVAL, "--min_pause_between_checkpoints=-1"], "--min_pause_between_checkpoints", "at least 0"),
    ([*FLINK, "--number_of_execution_retries=-1"], "--number_of_execution_retries", "at least 0"),
    ([*FLINK, "--execution_retry_delay=500"], "--execution_retry_delay", "needs --number_of_execution_retries"),
    ([*FLINK, "--state_backend=memory", "--state_backend_storage_path=file:///ck"], "--state_backend", "rocksdb"),
    ([*FLINK, "--state_backend=rocksdb"], "--state_backend", "needs --state_backend_storage_path"),
    ([*FLINK, "--state_backend_storage_path=file:///ck"], "--state_backend_storage_path", "needs --state_backend"),
    ([*FLINK, "--state_backend=rocksdb", "--state_backend_storage_path=ck"], "--state_backend_storage_path", "URI"),
    ([*FLINK, "--savepoint_path= "], "--savepoint_path", "empty"),
    ([*FLINK, "--max_bundle_size=0"], "--max_bundle_size", "at least 1"),
    ([*FLINK, "--max_bundle_time_mills=0.5"], "--max_bundle_time_mills", "whole number"),
    (
        ["--runner=FlinkRunner", "--source=synthetic://?events=10", INTERVAL],  # bounded: a batch job
        "--checkpointing_interval",
        "streaming",
    ),
]


@pytest.mark.parametrize(("argv", "option", "says"), BAD, ids=[" ".join(a[-2:]) for a, _, _ in BAD])
def test_bad_flink_option_exits_2_with_one_error_line(argv, option, says, capsys):
    assert main([*argv, *SAFE]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2, captured.err
    assert err[0].startswith(f"error: {option} ") and says in err[0], err[0]
    assert "Traceback" not in captured.err and captured.out == ""


def test_valid_flink_options_are_typed_for_the_job_server(monkeypatch):
    argv = [
        *FLINK,
        *SAFE,
        INTERVAL,
        "--checkpointing_mode=AT_LEAST_ONCE",
        "--checkpoint_timeout_millis=60000",
        "--min_pause_between_checkpoints=500",
        "--number_of_execution_retries=3",
        "--execution_retry_delay=1000",
        "--state_backend=rocksdb",
        "--state_backend_storage_path=file:///data/checkpoints",
        "--savepoint_path=file:///data/savepoints/sp-1",
        "--max_bundle_size=100",
        "--max_bundle_time_mills=50",
    ]
    expected = {
        "checkpointing_interval": 2000,
        "checkpointing_mode": "AT_LEAST_ONCE",
        "checkpoint_timeout_millis": 60000,
        "min_pause_between_checkpoints": 500,
        "number_of_execution_retries": 3,
        "execution_retry_delay": 1000,
        "state_backend": "rocksdb",
        "state_backend_storage_path": "file:///data/checkpoints",
        "savepoint_path": "file:///data/savepoints/sp-1",
        "max_bundle_size": 100,
        "max_bundle_time_mills": 50,
    }
    spec = resolve(argv)  # accepted
    assert spec.runner.flink == expected
    monkeypatch.setattr(jars, "flink_job_server_jar", lambda: "/cache/flink-job-server.jar")
    sent = runners.beam_options(spec.runner, spec.argv).get_all_options(drop_default=True)
    # What the portable runner sends to the job server (beam:option:<name>:v1), with the types Java expects.
    assert {name: sent[name] for name in expected} == expected


def test_no_flink_option_means_no_setting_on_any_runner():
    for runner in ("DirectRunner", "FlinkRunner", "DataflowRunner"):
        source = "--source=x.jsonl" if runner != "DirectRunner" else "--source=synthetic://?events=1"
        assert resolve([f"--runner={runner}", source]).runner.flink == {}


def test_flink_options_are_documented_but_not_template_parameters():
    assert {o.name for o in FLINK_OPTIONS}.isdisjoint(o.name for o in tm.template_options())


def test_config_error_names_the_option():
    with pytest.raises(ConfigError, match="^--checkpointing_mode "):
        resolve(["--runner=FlinkRunner", "--source=x.jsonl", "--checkpointing_mode=AT_LEAST_ONCE"])
