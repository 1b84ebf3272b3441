"""Streaming on Flink from Kafka in the `make bench` table: ``benchmarks/flink_kafka.py`` through this adapter.

That benchmark runs its own job on a Flink session cluster fed from a Kafka topic (a private broker and cluster
unless given running ones): a catch-up phase (a backlog in the topic before the job starts: the sustained
events/s) and a steady load (latency from publish to the aggregate row that first counts a record, p50 and p99).
It takes minutes and does not depend on the batch input size, so the harness runs it once, at the first size.
Any failure (no Java, no cluster, a timeout) becomes a "not measured" row with the reason.
"""

from __future__ import annotations

from typing import Any


def measure_flink(_path: str | None = None) -> dict[str, Any]:
    from benchmarks.flink_kafka import run_benchmark

    result = run_benchmark()
    events, rate = result["catch_up_events"], result["catch_up_events_per_s"]
    return {
        "events": events,
        "seconds": events / rate if rate else float("inf"),
        "cpu_seconds": None,
        "peak_rss": None,  # a JVM cluster, a broker and Python workers: not one process tree of ours
        "counters": {},
        "flink": {
            "summary": (
                f"catch-up of {events:,} records; steady {result['steady_offered_events_per_s']}/s for "
                f"{result['steady_seconds']} s: {'kept up' if result['kept_up'] else 'fell behind'}; latency p50 "
                f"{result['latency_p50_s']} s, p99 {result['latency_p99_s']} s (early panes every "
                f"{result['early_firing_s']} s); job start-up {result['job_startup_s']} s"
            ),
            **result,
        },
    }
