"""Command line: options -> launch spec -> start-up check -> build -> run -> summary.

    python -m pipelines.streaming_analytics                      # the embedded demo, no cloud, no flags
    python -m pipelines.streaming_analytics --source=events.jsonl --sink=out/agg --dead_letter_sink=out/dlq

Bad options, and what the start-up check finds (files that do not exist, a broker that does not answer, a missing
topic, subscription or table, no credentials for Google), end the program with one line naming the option (exit
code 2), never a traceback. Ctrl-C stops a running job (cancelled on its runner, a Flink cluster too) and prints the
summary so far.
"""

from __future__ import annotations

import argparse
import glob
import logging
import os
import sys
import time
from collections.abc import Sequence

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.job import run_until_done
from pipelines.options import AnalyticsOptions, ConfigError, check_unknown_flags
from pipelines.spec import LaunchSpec, resolve
from pipelines.startup_check import check_before_start
from pipelines.summary import RunSummary, read_rows
from transforms.io import local_file_prefix
from transforms.windowing import SLIDING

USAGE = "python -m pipelines.streaming_analytics [--option=value ...]"


def _help() -> str:
    parser = argparse.ArgumentParser(prog="python -m pipelines.streaming_analytics", add_help=False)
    AnalyticsOptions._add_argparse_args(parser)
    return (
        parser.format_help()
        + "\nStandard Beam options (--runner, --streaming, --direct_num_workers, --project, ...) apply too.\n"
    )


def _clear_previous_outputs(*prefixes: str | None) -> None:
    """A run owns the files named ``<prefix>-*.jsonl``: remove the previous run's so results never mix."""
    for prefix in prefixes:
        if prefix is None:
            continue
        directory = os.path.dirname(prefix)
        if directory:
            os.makedirs(directory, exist_ok=True)
        for path in glob.glob(f"{prefix}-*.jsonl"):
            os.remove(path)


def run(argv: Sequence[str]) -> RunSummary:
    """Validates and checks the options, builds and runs the pipeline; returns its summary. Raises ConfigError for
    bad options and for what the start-up check finds."""
    check_unknown_flags(argv)
    spec = resolve(argv)
    check_before_start(spec)
    return launch(spec)


def launch(spec: LaunchSpec) -> RunSummary:
    """Builds and runs the pipeline of ``spec`` until it ends (or Ctrl-C stops it); returns its summary."""
    sink, dead_letter_sink = local_file_prefix(spec.sink.uri), local_file_prefix(spec.dead_letter_sink.uri)
    _clear_previous_outputs(sink, dead_letter_sink)

    started = time.perf_counter()
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    outcome = run_until_done(pipeline, spec)
    seconds = time.perf_counter() - started

    workers = f", {os.cpu_count()} worker processes" if spec.runner.every_core else ""
    mode = f"{spec.runner.describe()}, {'streaming' if spec.streaming else 'batch'}{workers}"
    window = spec.analytics.window
    summary = RunSummary(
        seconds,
        mode,
        outcome.counters,
        remote_sinks=[s.uri for s in (spec.sink, spec.dead_letter_sink) if local_file_prefix(s.uri) is None],
        remote_aggregates=sink is None,
        remote_dead_letters=dead_letter_sink is None,
        windows_per_event=window.size_s // window.period_s if window.kind == SLIDING and window.period_s else 1,
        interrupted=outcome.interrupted,
        counters_known=bool(outcome.counters) or not outcome.interrupted,
    )
    if sink:
        summary.aggregate_files, summary.aggregate_rows = read_rows(sink)
    if dead_letter_sink:
        summary.dead_letter_files, summary.dead_letter_rows = read_rows(dead_letter_sink)
    return summary


class _WithoutWorkerStartupNoise(logging.Filter):
    """Beam's worker processes warn at start-up that they have no semi-persistent directory (a notion of Dataflow's
    containers); the direct runner's multi-process mode forwards that once per worker. Everything else passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No semi_persistent_directory found" not in record.getMessage()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(_help())
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("apache_beam.runners.portability.local_job_service").addFilter(_WithoutWorkerStartupNoise())
    try:
        summary = run(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(f"usage: {USAGE}  (--help lists the options)", file=sys.stderr)
        return 2
    print(summary.render())
    return 130 if summary.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
