"""Which dedup implementation: the same batch job with ours, Beam's DeduplicatePerKey, and none.

python -m benchmarks.dedup_choice --events 200000
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from transforms.analytics import AnalyticsConfig, StreamingAnalytics
from transforms.io import ReadRecords
from transforms.io.synthetic import generate, parse_synthetic_uri


def write_events(path: Path, events: int) -> None:
    spec = parse_synthetic_uri(f"synthetic://?events={events}&rate=200&keys=50&users=5000&bad=0.02&duplicates=0.02")
    with path.open("wb") as out:
        for _, _, payload in generate(spec):
            out.write(payload + b"\n")


def run_once(path: Path, impl: str) -> float:
    config = dataclasses.replace(AnalyticsConfig(), dedup_impl=impl)
    started = time.perf_counter()
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions()) as p:
        outputs = p | ReadRecords(str(path)) | StreamingAnalytics(config)
        outputs["aggregates"] | "Count" >> beam.combiners.Count.Globally().without_defaults()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--impls", default="off,group,state,beam")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.jsonl"
        write_events(path, args.events)
        print(f"{args.events} events, batch, FnApiRunner, one process")
        for impl in args.impls.split(","):
            seconds = run_once(path, impl)
            print(f"  dedup={impl:<6} {seconds:7.1f} s  {args.events / seconds:9.0f} events/s")


if __name__ == "__main__":
    main()
