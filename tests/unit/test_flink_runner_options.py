"""--runner=FlinkRunner needs no extra flags: the cached job server and a Docker-free Python environment are filled in,
and what the user gives explicitly is kept."""

from __future__ import annotations

import json

import pytest
from apache_beam.options.pipeline_options import FlinkRunnerOptions, PipelineOptions, PortableOptions

from pipelines.local_run import jars
from pipelines.runners import beam_options
from pipelines.spec import resolve

JAR = "/cache/beam-flink/lib/flink-job-server.jar"


@pytest.fixture(autouse=True)
def cached_jar(monkeypatch):
    # The real fetch (mvn) is what tests/integration/test_flink_local.py exercises.
    monkeypatch.setattr(jars, "flink_job_server_jar", lambda: JAR)


def _beam_options(*argv: str) -> PipelineOptions:
    spec = resolve(["--source=x.jsonl", *argv])
    return beam_options(spec.runner, spec.argv)


def _filled(*argv: str) -> PipelineOptions:
    return _beam_options("--runner=FlinkRunner", *argv)


def test_embedded_flink_gets_the_cached_job_server_and_beams_loopback_default():
    options = _filled("--flink_master=[local]")
    assert options.view_as(FlinkRunnerOptions).flink_job_server_jar == JAR
    # Beam's FlinkRunner itself defaults [local]/[auto] to LOOPBACK (workers in the launching process).
    assert options.view_as(PortableOptions).environment_type is None


def test_a_cluster_gets_python_workers_started_by_the_task_manager():
    options = _filled("--flink_master=127.0.0.1:8081")
    portable = options.view_as(PortableOptions)
    assert portable.environment_type == "PROCESS"
    command = json.loads(portable.environment_config)["command"]
    assert "python-boot" in command
    with open(command) as script:
        assert "-m pipelines.local_run.boot " in script.read()


def test_explicit_choices_are_kept():
    options = _filled(
        "--flink_master=flink:8081",
        "--flink_job_server_jar=/opt/job-server.jar",
        "--environment_type=EXTERNAL",
        "--environment_config=localhost:50000",
    )
    assert options.view_as(FlinkRunnerOptions).flink_job_server_jar == "/opt/job-server.jar"
    assert options.view_as(PortableOptions).environment_type == "EXTERNAL"
    assert options.view_as(PortableOptions).environment_config == "localhost:50000"


def test_other_runners_are_left_alone():
    options = _beam_options("--runner=DataflowRunner")
    assert options.view_as(FlinkRunnerOptions).flink_job_server_jar is None


@pytest.mark.parametrize(
    "name", ["FlinkRunner", "flink", "FLINK", "apache_beam.runners.portability.flink_runner.FlinkRunner"]
)
def test_every_spelling_beam_accepts_gets_the_cached_job_server(name):
    options = _beam_options(f"--runner={name}", "--flink_master=[local]")
    assert options.view_as(FlinkRunnerOptions).flink_job_server_jar == JAR
