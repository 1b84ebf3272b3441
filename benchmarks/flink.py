"""Streaming on Flink from Kafka, measured by ``benchmarks/flink_kafka.py`` (built on the Flink branch).

The harness calls it through this adapter when the module exists. What it expects from that module: a function
``measure``, ``run`` or ``benchmark`` taking (some of) ``events`` (int) and ``path`` (the JSON-lines input) as
keywords and returning a mapping with ``events_per_s`` and latency percentiles ``p50_ms`` and ``p99_ms`` (in
milliseconds, publish -> aggregate row emitted), optionally ``peak_rss`` (bytes) -- or a tuple
``(events_per_s, p50_ms, p99_ms)``. Any failure becomes a "not measured" row with the reason.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

ENTRY_POINTS = ("measure", "run", "benchmark")


def measure_flink(path: str, events: int | None = None) -> dict[str, Any]:
    module = importlib.import_module("benchmarks.flink_kafka")
    entry = next((getattr(module, name) for name in ENTRY_POINTS if callable(getattr(module, name, None))), None)
    if entry is None:
        raise RuntimeError(f"benchmarks/flink_kafka.py has none of {', '.join(ENTRY_POINTS)}()")
    if events is None:
        with open(path, "rb") as handle:
            events = sum(1 for _ in handle)
    offered = {"events": events, "path": path}
    parameters = inspect.signature(entry).parameters
    result = entry(**{name: value for name, value in offered.items() if name in parameters})
    if not isinstance(result, dict):
        rate, p50, p99 = result
        result = {"events_per_s": rate, "p50_ms": p50, "p99_ms": p99}
    rate = float(result["events_per_s"])
    return {
        "events": events,
        "seconds": events / rate if rate else float("inf"),
        "cpu_seconds": None,
        "peak_rss": result.get("peak_rss"),
        "counters": {},
        "latency_ms": {"p50": result.get("p50_ms"), "p99": result.get("p99_ms")},
    }
