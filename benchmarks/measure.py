"""One measurement in a fresh process: ``python -m benchmarks.measure VARIANT FILE [--workers N]`` -> one JSON line.

Variants: ``plain`` (the single-process loop), ``parse_validate`` (parsing and validating alone, in memory;
``--fast-path`` picks the JSON fast path's implementation: the C scanner chained with msgspec, or one of them),
``beam`` (the main job through the CLI's ``run``; ``--workers`` 1 = in-process, 2 = two worker processes,
``default`` = the CLI's own choice), ``flink`` (``benchmarks/flink_kafka.py``, when that module exists).

Each measurement runs in its own process, so peak RSS (the process and all its children, sampled) is the
variant's own; the time excludes interpreter start-up and imports but includes everything the job does.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

_PAGE = os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Peak resident memory of this process and its descendants, sampled from /proc every ``interval`` s."""

    def __init__(self, interval: float = 0.2) -> None:
        self.peak = 0
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        self.peak = max(self.peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()

    def sample(self) -> None:
        pids, total = [os.getpid()], 0
        while pids:
            pid = pids.pop()
            try:
                with open(f"/proc/{pid}/statm") as statm:
                    total += int(statm.read().split()[1]) * _PAGE
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        pids.extend(int(child) for child in children.read().split())
            except (FileNotFoundError, ProcessLookupError, ValueError):
                continue  # a process that ended between two reads
        self.peak = max(self.peak, total)


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _plain(path: str, work: str) -> dict[str, Any]:
    from benchmarks.plain_loop import run_plain_loop

    return {"counters": run_plain_loop(path, work)}


def _import_before_the_clock(variant: str) -> None:
    """Interpreter and import time is not the job's: load what the variant uses first."""
    if variant == "plain":
        import benchmarks.plain_loop  # noqa: F401
    elif variant in ("beam", "direct_replay"):
        import pipelines.streaming_analytics  # noqa: F401


WORKER_FLAGS = {
    "default": [],
    "1": ["--direct_num_workers=1"],
    "2": ["--direct_num_workers=2", "--direct_running_mode=multi_processing"],
}


def _spec(path: str, work: str, workers: str):
    from pipelines.spec import resolve

    return resolve(
        [f"--source={path}", f"--sink={work}/aggregates", f"--dead_letter_sink={work}/dead_letter"]
        + WORKER_FLAGS[workers]
    )


def _beam_without_dedup(path: str, work: str, workers: str) -> dict[str, Any]:
    """The job's graph without its dedup step (benchmarks/graphs.py), on the engine the CLI would pick."""
    from benchmarks.graphs import WithoutDedup
    from pipelines.graph import new_pipeline
    from pipelines.summary import counters as counters_of
    from transforms.analytics import AGGREGATES, DEAD_LETTERS
    from transforms.io import ReadRecords, WriteRows

    spec = _spec(path, work, workers)
    pipeline = new_pipeline(spec)
    outputs = pipeline | "ReadRecords" >> ReadRecords(path) | WithoutDedup(spec.analytics)
    _ = outputs[AGGREGATES] | "WriteAggregates" >> WriteRows(spec.sink)
    _ = outputs[DEAD_LETTERS] | "WriteDeadLetters" >> WriteRows(spec.dead_letter_sink)
    result = pipeline.run()
    result.wait_until_finish()
    found = counters_of(result)
    names = ("records_read", "events_valid", "dead_letters", "duplicates", "aggregate_rows")
    return {"counters": {name: found.get(name, 0) for name in names}}


def _beam(path: str, work: str, workers: str, dedup: bool = True) -> dict[str, Any]:
    from pipelines.streaming_analytics import launch

    if not dedup:
        return _beam_without_dedup(path, work, workers)
    summary = launch(_spec(path, work, workers))
    counters = {
        name: summary.counters.get(name, 0)
        for name in ("records_read", "events_valid", "dead_letters", "duplicates", "aggregate_rows")
    }
    counters["conserved"] = int(summary.conserved())
    return {"counters": counters}


# The DirectRunner's streaming engine on a replayed stream (TestStream, simulated clock): the embedded demo's mix,
# 20,000 records arriving at 20 per second of simulated time (1,000 s: 100 replay steps of 10 s).
REPLAY = "synthetic://bench?mode=replay&events=20000&rate=20&keys=50&users=5000&bad=0.02&duplicates=0.02&late=0.02"


def _direct_replay(work: str) -> dict[str, Any]:
    from pipelines.streaming_analytics import run

    summary = run([f"--source={REPLAY}", f"--sink={work}/aggregates", f"--dead_letter_sink={work}/dead_letter"])
    names = ("records_read", "events_valid", "dead_letters", "duplicates", "aggregate_rows")
    counters = {name: summary.counters.get(name, 0) for name in names}
    counters["conserved"] = int(summary.conserved())
    return {"counters": counters}


def measure(variant: str, path: str, workers: str = "1", dedup: bool = True, fast_path: str = "auto") -> dict[str, Any]:
    """Runs one variant on ``path``: events, seconds (wall), cpu_seconds, peak_rss (bytes), counters."""
    with tempfile.TemporaryDirectory(prefix="bench-") as work:
        if variant == "parse_validate":
            return _measure_parse_validate(path, fast_path)
        if variant == "flink":
            from benchmarks.flink import measure_flink

            return measure_flink(path)
        job = {
            "plain": lambda: _plain(path, work),
            "beam": lambda: _beam(path, work, workers, dedup),
            "direct_replay": lambda: _direct_replay(work),
        }[variant]
        _import_before_the_clock(variant)
        cpu, started = _cpu_seconds(), time.perf_counter()
        with PeakRss() as rss:
            result = job()
        result.update(seconds=time.perf_counter() - started, cpu_seconds=_cpu_seconds() - cpu, peak_rss=rss.peak)
        result["events"] = result["counters"]["records_read"]
        return result


def _measure_parse_validate(path: str, fast_path: str = "auto") -> dict[str, Any]:
    """Parse + validate alone: the lines are read first, then BatchParser (fast path + reference) runs, timed."""
    from transforms.io.files import read_line_range
    from transforms.parse_validate import BatchParser
    from transforms.records import RecordBatch

    batches = [RecordBatch(path, lines) for lines in read_line_range(path, 0, os.path.getsize(path))]
    parser = BatchParser(fast_path=fast_path)
    valid = rejected = fast = 0
    cpu, started = _cpu_seconds(), time.perf_counter()
    with PeakRss() as rss:
        for batch in batches:
            parsed, parse_rejects = parser.parse(batch)
            checked, validate_rejects = parser.validate(parsed)
            fast += len(parsed.valid)
            valid += len(checked.valid)
            rejected += len(parse_rejects) + len(validate_rejects)
    events = sum(len(batch.payloads) for batch in batches)
    return {
        "events": events,
        "seconds": time.perf_counter() - started,
        "cpu_seconds": _cpu_seconds() - cpu,
        "peak_rss": rss.peak,
        "counters": {"records_read": events, "events_valid": valid, "dead_letters": rejected},
        "fast_path_share": fast / events if events else 0.0,
        "fast_path": fast_path,
    }


def main(argv: list[str] | None = None) -> int:
    from transforms.fast_json import IMPLEMENTATIONS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.measure")
    parser.add_argument("variant", choices=["plain", "parse_validate", "beam", "direct_replay", "flink"])
    parser.add_argument("path")
    parser.add_argument("--workers", default="1", choices=sorted(WORKER_FLAGS))
    parser.add_argument("--no-dedup", dest="dedup", action="store_false", help="beam: without the dedup step")
    parser.add_argument(
        "--fast-path",
        default="auto",
        choices=IMPLEMENTATIONS,
        help="parse_validate: the JSON fast path (auto: the C scanner, then msgspec; or either alone)",
    )
    args = parser.parse_args(argv)
    if args.variant != "direct_replay" and not Path(args.path).exists():  # the replay generates its own input
        print(f"error: no such input file: {args.path}", file=sys.stderr)
        return 2
    print(json.dumps(measure(args.variant, args.path, args.workers, args.dedup, args.fast_path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
