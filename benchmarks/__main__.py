"""``make bench``: throughput and memory of the main job against the plain-Python limit, side by side.

    python -m benchmarks [--sizes 100000,1000000,5000000] [--repeat 3] [--variants plain,parse_validate,beam1,...]

For every size (generated once, ``benchmarks/data.py``) and every repeat, each variant runs in its own process,
in an order that rotates between repeats so a burst of load from elsewhere does not always hit the same one.
Printed and written to ``docs/benchmarks.md`` (between the result markers) with a plot ``docs/benchmarks.png``:
the median events/s, the ratio to the plain loop of the same run, median peak RSS and CPU seconds. The Beam runs
must count exactly what the plain loop counts (records, valid events, dead letters, duplicates, aggregate rows);
a mismatch is shown in the table. Timings never fail anything: this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks import data, report


@dataclass(frozen=True)
class Variant:
    name: str  # as --variants names it
    label: str  # as the table shows it
    args: tuple[str, ...]  # for benchmarks.measure


VARIANTS = {
    v.name: v
    for v in (
        Variant("plain", "plain loop, 1 core", ("plain",)),
        Variant("parse_validate", "parse + validate alone, 1 core", ("parse_validate",)),
        Variant("beam1", "Beam batch, DirectRunner, 1 worker (in process)", ("beam", "--workers", "1")),
        Variant("beam2", "Beam batch, DirectRunner, 2 worker processes", ("beam", "--workers", "2")),
        Variant("beam1_nodedup", "Beam batch, 1 worker, dedup off (memory reference)", ("beam", "--no-dedup")),
        Variant("direct_replay", "Beam streaming, DirectRunner, replay of 20,000 records", ("direct_replay",)),
        Variant("flink", "Beam streaming, Flink, from Kafka", ("flink",)),
    )
}
CHECKED = ("records_read", "events_valid", "dead_letters", "duplicates", "aggregate_rows")
# Measured once (first size, first run): independent of the batch input, and minutes long.
ONCE = ("flink", "direct_replay")


@dataclass
class Cell:
    """All repeats of one variant at one size."""

    runs: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None

    def median(self, key: str) -> float | None:
        values = [run[key] for run in self.runs if run.get(key) is not None]
        return median(values) if values else None

    @property
    def events_per_s(self) -> float | None:
        rates = [run["events"] / run["seconds"] for run in self.runs if run.get("seconds")]
        return median(rates) if rates else None


def run_variant(variant: Variant, path: Path, timeout_s: float) -> dict[str, Any]:
    """One measurement in a fresh process; raises RuntimeError with the reason when it fails."""
    env = dict(os.environ)
    # Worker processes of the multi-process direct runner import the project from here (a worktree's own code).
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), env.get("PYTHONPATH")]))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.measure", *variant.args, str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"timed out after {timeout_s:.0f} s") from None
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"exit {done.returncode}: {last[:200]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000,5000000", help="comma-separated event counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per variant and size (medians are reported)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"any of {', '.join(VARIANTS)}")
    parser.add_argument("--out", default="docs/benchmarks.md", help="Markdown file whose results section is rewritten")
    parser.add_argument("--plot", default="docs/benchmarks.png", help="PNG of throughput and memory against size")
    parser.add_argument("--cache", default=str(data.CACHE), help="where generated inputs are kept")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one measurement may take")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size.replace("_", "")) for size in args.sizes.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--sizes must be comma-separated whole numbers, got {args.sizes!r}")
    unknown = [name for name in args.variants.split(",") if name not in VARIANTS]
    if unknown or not sizes or args.repeat < 1:
        parser.error(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}" if unknown else "nothing to run")
    variants = [VARIANTS[name] for name in args.variants.split(",")]

    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cells: dict[tuple[int, str], Cell] = {}
    loads: list[tuple[int, tuple[float, float, float], tuple[float, float, float]]] = []
    for size in sizes:
        print(f"input: {size:,} events ...", flush=True)
        path = data.dataset(size, Path(args.cache))
        load_before = os.getloadavg()
        for repeat in range(args.repeat):
            shift = repeat % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                if variant.name in ONCE and (size != sizes[0] or repeat > 0):
                    continue
                cell = cells.setdefault((size, variant.name), Cell())
                if cell.failure is not None:
                    continue
                try:
                    cell.runs.append(run_variant(variant, path, args.timeout))
                except RuntimeError as exc:
                    cell.failure = str(exc)
                    if variant.name == "flink" and "No module named 'benchmarks.flink_kafka'" in str(exc):
                        cell.failure = "benchmarks/flink_kafka.py is not on this branch"
                print(f"  {variant.label}: run {repeat + 1} {'failed' if cell.failure else 'done'}", flush=True)
        loads.append((size, load_before, os.getloadavg()))

    rows = report.rows(sizes, variants, cells, CHECKED)
    print()
    print(report.table(rows))
    meta = {
        "started": started,
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
        "repeat": args.repeat,
        "loads": loads,
    }
    report.write_markdown(Path(args.out), rows, meta)
    report.plot(Path(args.plot), rows)
    print(f"\nwrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
