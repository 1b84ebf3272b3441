"""The Flink/Kafka rows of the `make bench` table: ``benchmarks/flink_kafka.py`` and ``benchmarks/flink_soak.py``
through these adapters, one function per row (``MEASURES``).

Each runs its own job on its own input (a private Kafka broker and Flink session cluster, started and stopped
here), independent of the batch input size, so the harness runs each once, at the first size. The throughput rows
carry their own baseline: the plain confluent-kafka loop on the same topic in the same run (``own_ratio``). Any
failure (no Java, a timeout, a failed job) becomes a "not measured" row with the reason.

- ``flink``: catch-up of a 200,000-record backlog, 1 TaskManager, parallelism 1, and the latency under a steady
  2,000 events/s with early panes every second (bundles of at most ``LATENCY_BUNDLE_MS``);
- ``flink_1m``: catch-up of 1,000,000 records, 100 of them exactly ``--max_payload_bytes`` (1 MiB): the sizing
  check; peak RSS is the Python worker's;
- ``flink_p2``: catch-up of 200,000 records from 2 partitions, 2 TaskManagers, parallelism 2;
- ``prism_kafka``: catch-up of 200,000 records on Prism;
- ``flink_soak_kafka`` / ``flink_soak_synthetic``: 30 minutes at 200 events/s on the session cluster, memory sampled
  (``BENCH_SOAK=0`` skips them, ``BENCH_SOAK_MINUTES`` shortens them).
"""

from __future__ import annotations

import os
from typing import Any

_MB = 1 << 20
CATCH_UP = 200_000
LATENCY_RATE = 2_000
LATENCY_BUNDLE_MS = 100


def _catch_up_row(result: dict[str, Any], summary: str) -> dict[str, Any]:
    events, rate = result["catch_up_events"], result["catch_up_events_per_s"]
    rss = result.get("python_worker_peak_rss_mb")
    notes = [summary]
    if "ratio_to_plain_loop" in result:
        notes.append(
            f"plain confluent-kafka loop on the same topic {result['plain_loop_events_per_s']:,} events/s"
            f"{'' if result['plain_loop_counts_equal'] else ' (ITS COUNTS DIFFER)'}"
        )
    notes.append("counts exact" if result["counts_exact"] else "COUNTS NOT EXACT")
    if "tm_heap_peak_mb" in result:
        notes.append(
            f"TaskManager heap peak {result['tm_heap_peak_mb']} of {result['tm_heap_max_mb']} MB, direct "
            f"{result['tm_direct_peak_mb']} of {result['tm_direct_max_mb']} MB"
        )
    return {
        "events": events,
        "seconds": events / rate if rate else float("inf"),
        "cpu_seconds": None,
        "peak_rss": rss * _MB if rss else None,  # the Python worker(s), not the JVMs or the broker
        "counters": {},
        "own_ratio": result.get("ratio_to_plain_loop"),
        "flink": {"summary": "; ".join(notes), **result},
    }


def measure_flink(_path: str | None = None) -> dict[str, Any]:
    from benchmarks.flink_kafka import run_catch_up, run_latency

    result = run_catch_up(CATCH_UP)
    latency = run_latency(LATENCY_RATE, 60, max_bundle_time_mills=LATENCY_BUNDLE_MS)
    summary = (
        f"catch-up of {CATCH_UP:,} records (1 TaskManager, parallelism 1, start-up {result['job_startup_s']} s "
        f"excluded); steady {LATENCY_RATE:,}/s for 60 s with early panes every 1 s and bundles of at most "
        f"{LATENCY_BUNDLE_MS} ms: {'kept up' if latency['kept_up'] else 'fell behind'}, latency p50 "
        f"{latency['latency_p50_s']} s, p99 {latency['latency_p99_s']} s ({latency['counted_share']:.0%} counted)"
    )
    row = _catch_up_row(result, summary)
    row["flink"]["latency"] = latency
    return row


def measure_flink_1m(_path: str | None = None) -> dict[str, Any]:
    from benchmarks.flink_kafka import run_catch_up

    result = run_catch_up(1_000_000, large=100)
    return _catch_up_row(
        result,
        f"catch-up of 1,000,000 records, 100 of them 1 MiB; peak RSS = the Python worker's "
        f"({result.get('python_workers', '?')} process); Java worker peak {result.get('java_worker_peak_rss_mb')} MB",
    )


def measure_flink_p2(_path: str | None = None) -> dict[str, Any]:
    from benchmarks.flink_kafka import run_catch_up

    result = run_catch_up(CATCH_UP, parallelism=2, taskmanagers=2)
    return _catch_up_row(result, f"catch-up of {CATCH_UP:,} records from 2 partitions, 2 TaskManagers, parallelism 2")


def measure_prism_kafka(_path: str | None = None) -> dict[str, Any]:
    from benchmarks.flink_kafka import run_catch_up

    result = run_catch_up(CATCH_UP, runner="prism")
    return _catch_up_row(result, f"catch-up of {CATCH_UP:,} records on Prism (LOOPBACK Python worker)")


def _soak(source: str) -> dict[str, Any]:
    if os.environ.get("BENCH_SOAK", "1") == "0":
        raise RuntimeError("skipped (BENCH_SOAK=0)")
    from benchmarks.flink_soak import run_soak

    minutes = float(os.environ.get("BENCH_SOAK_MINUTES", "30"))
    result = run_soak(source, minutes=minutes, rate=200)
    parts = result["slices"]
    first, last = (parts[0], parts[-1]) if parts else ({}, {})

    def span(key: str) -> str:
        return f"{first.get(key, '?')} → {last.get(key, '?')} MB"

    flat = {True: "FLAT", False: "NOT FLAT", None: "not judged"}[result["flat"]]
    summary = (
        f"soak: {result['minutes']} min at 200/s from {source}, job {result['job_state_at_end']}, "
        f"{result['restarts']} restarts; {flat} after 5 min: TaskManager live heap (after a full GC, sampled every "
        f"minute) {span('heap_live_mb')}, heap 5-min minimum {span('heap_min_mb')}, "
        f"direct {span('direct_max_mb')}, Python worker RSS {span('python_rss_max_mb')}, Java worker RSS "
        f"{span('java_worker_rss_max_mb')}"
    )
    rss = max((part["python_rss_max_mb"] for part in parts), default=0)
    return {
        "events": int(result["minutes"] * 60 * 200),
        "seconds": result["minutes"] * 60,
        "cpu_seconds": None,
        "peak_rss": rss * _MB or None,
        "counters": {},
        "flink": {"summary": summary, **result},
    }


def measure_flink_soak_kafka(_path: str | None = None) -> dict[str, Any]:
    return _soak("kafka")


def measure_flink_soak_synthetic(_path: str | None = None) -> dict[str, Any]:
    return _soak("synthetic")


MEASURES = {
    "flink": measure_flink,
    "flink_1m": measure_flink_1m,
    "flink_p2": measure_flink_p2,
    "prism_kafka": measure_prism_kafka,
    "flink_soak_kafka": measure_flink_soak_kafka,
    "flink_soak_synthetic": measure_flink_soak_synthetic,
}
