"""Benchmark input: JSON-lines files of generated events with a realistic mix, cached under ``.cache/bench``.

Every size spans the same hour of event time with the same 50 pages, 4 event types and 5,000 users: the windows
and keys (what aggregation state is bounded by) stay the same when the number of events grows, so memory that
grows with the input can only be per-event state (see docs/benchmarks.md, "Memory").
"""

from __future__ import annotations

import os
from pathlib import Path

from transforms.io.synthetic import generate, parse_synthetic_uri

CACHE = Path(".cache") / "bench"
SPAN_S = 3600
MIX = "keys=50&users=5000&event_types=4&bad=0.02&duplicates=0.02&late=0.02&seed=42&start=2024-01-01T00:00:00Z"


def spec_uri(events: int) -> str:
    return f"synthetic://?events={events}&rate={events / SPAN_S}&{MIX}"


def dataset(events: int, cache: Path = CACHE) -> Path:
    """The path of the file with ``events`` records (generated once, then reused)."""
    path = cache / f"events-{events}.jsonl"
    if path.exists():
        return path
    cache.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    with partial.open("wb") as out:
        chunk: list[bytes] = []
        for _, _, payload in generate(parse_synthetic_uri(spec_uri(events))):
            chunk.append(payload)
            if len(chunk) >= 10_000:
                out.write(b"\n".join(chunk) + b"\n")
                chunk.clear()
        if chunk:
            out.write(b"\n".join(chunk) + b"\n")
    partial.replace(path)
    return path
