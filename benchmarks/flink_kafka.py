"""Streaming on Flink from Kafka: sustained events/s and end-to-end latency (publish -> aggregate row emitted).

    python -m benchmarks.flink_kafka                              # private Kafka broker + Flink cluster, defaults
    python -m benchmarks.flink_kafka --backlog 50000 --rate 400 --seconds 60 --parallelism 2
    python -m benchmarks.flink_kafka --bootstrap 127.0.0.1:19092 --flink_master 127.0.0.1:18081   # `make services-up`

One job on the session cluster, two phases on one topic:

1. catch-up: ``backlog`` records are in the topic before the job starts (it reads from the earliest offset). Events/s
   from the first aggregate row to the moment every record is in an emitted row: what the job sustains when it never
   waits for input (job start-up excluded).
2. steady load: ``rate`` records/s produced in real time for ``seconds``. Per record, latency = ``emitted_at`` of the
   first aggregate row whose ``event_count`` includes it - the record's Kafka timestamp (publish time); p50 and p99.
   Rows are emitted by early panes every ``early_firing`` seconds (default 1), so that interval is part of the
   latency a user sees. ``kept_up`` says whether the job drained the load within ``early_firing`` + 10 s of its end.

The records are the synthetic generator's, clean (no bad, duplicate or late ones), so each lands in exactly one group.
Within a group a record is counted in the first pane whose count exceeds its place in publish order: one partition
and keyed shuffles keep that order per key. Not part of the test suite (numbers depend on the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from pipelines.summary import read_rows
from transforms.io.synthetic import generate_block, parse_synthetic_uri
from transforms.timefmt import format_rfc3339_us, now_us, parse_rfc3339_us

WINDOW_S = 10
_US = 1_000_000
# Clean records: every one is valid, unique and on time.
_CLEAN = "keys=50&users=5000&event_types=4&bad=0&duplicates=0&late=0&too_late=0"

Group = tuple[str, str, Any]  # (window_start, event_type, key)


def _group(payload: bytes) -> Group:
    event = orjson.loads(payload)
    at = event["event_time"]
    at_us = parse_rfc3339_us(at) if isinstance(at, str) else at * 1000
    start = at_us - at_us % (WINDOW_S * _US)
    return format_rfc3339_us(start), event["event_type"], event.get("page")


def latencies(published: dict[Group, list[int]], rows: list[dict[str, Any]]) -> list[float]:
    """Seconds from publish to the first emitted row that counts each record (records never counted are left out).

    ``published``: per group, the records' publish times (µs) in publish order. ``rows``: aggregate rows.
    """
    panes: dict[Group, list[tuple[int, int]]] = defaultdict(list)
    for row in rows:
        group = (row["window_start"], row["event_type"], row["key"])
        if group in published:
            panes[group].append((row["pane_index"], row["event_count"], parse_rfc3339_us(row["emitted_at"])))
    result = []
    for group, times in published.items():
        emitted = sorted(panes.get(group, []))
        for place, published_us in enumerate(times):
            first = next((at for _, count, at in emitted if count > place), None)
            if first is not None:
                result.append((first - published_us) / _US)
    return result


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def _completion_us(published: dict[Group, list[int]], rows: list[dict[str, Any]]) -> tuple[int, int] | None:
    """(first row emitted, first moment every record of ``published`` was in an emitted row), µs; None if not yet."""
    done: dict[Group, int] = {}
    first = None
    for row in rows:
        group = (row["window_start"], row["event_type"], row["key"])
        if group not in published:
            continue
        at = parse_rfc3339_us(row["emitted_at"])
        first = at if first is None else min(first, at)
        if row["event_count"] >= len(published[group]):
            done[group] = min(done.get(group, at), at)
    if first is None or len(done) < len(published):
        return None
    return first, max(done.values())


class _Producer:
    def __init__(self, bootstrap: str, topic: str) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self._topic = topic
        self.published: dict[Group, list[int]] = defaultdict(list)
        self.errors: list[str] = []

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        self.published[_group(msg.value())].append(msg.timestamp()[1] * 1000)

    def send(self, payload: bytes) -> None:
        while True:
            try:
                self._producer.produce(self._topic, value=payload, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self) -> None:
        if self._producer.flush(120) or self.errors:
            raise RuntimeError(f"producing failed: {self.errors[:3]}")


@contextlib.contextmanager
def _services(bootstrap: str | None, flink_master: str | None) -> Iterator[tuple[str, str]]:
    """The given addresses, or a private broker and cluster started (and stopped) here."""
    with contextlib.ExitStack() as stack:
        if bootstrap is None:
            from services import KafkaBroker

            bootstrap = stack.enter_context(KafkaBroker()).bootstrap_servers
        if flink_master is None:
            from services import FlinkCluster

            flink_master = stack.enter_context(FlinkCluster()).flink_master
        yield bootstrap, flink_master


def _wait(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout_s:.0f} s")


def run_benchmark(
    backlog: int = 20_000,
    rate: int = 200,
    seconds: int = 60,
    parallelism: int = 1,
    early_firing: int = 1,
    checkpointing_interval: int | None = None,
    max_bundle_time_mills: int | None = None,
    bootstrap: str | None = None,
    flink_master: str | None = None,
) -> dict[str, Any]:
    """Runs both phases (see the module doc) and returns the measurements."""

    from pipelines.graph import build_pipeline, new_pipeline
    from pipelines.spec import resolve
    from services.kafka import create_topics

    with _services(bootstrap, flink_master) as (bootstrap, flink_master), tempfile.TemporaryDirectory() as tmp:
        topic = create_topics(bootstrap, "bench")["bench"]
        # Phase 1: the backlog, with event times in the recent past (one window span before now at most).
        catch_up = _Producer(bootstrap, topic)
        spec = parse_synthetic_uri(f"synthetic://?rate={max(backlog / 60, 1)}&seed=101&{_CLEAN}")
        for _, _, payload in generate_block(spec, 0, backlog, anchor_us=now_us() - 60 * _US):
            catch_up.send(payload)
        catch_up.flush()

        out = Path(tmp)
        argv = [
            f"--source=kafka://{bootstrap}/{topic}",
            f"--sink={out / 'agg'}",
            f"--dead_letter_sink={out / 'dlq'}",
            f"--kafka_consumer_group=bench-{uuid.uuid4().hex[:8]}",
            "--kafka_start_offset=earliest",
            f"--window_size={WINDOW_S}",
            f"--early_firing={early_firing}",
            "--runner=FlinkRunner",
            f"--flink_master={flink_master}",
            f"--parallelism={parallelism}",
            "--streaming",
        ]
        if checkpointing_interval:
            argv.append(f"--checkpointing_interval={checkpointing_interval}")
        if max_bundle_time_mills:
            argv.append(f"--max_bundle_time_mills={max_bundle_time_mills}")
        launch_spec = resolve(argv)
        pipeline = new_pipeline(launch_spec)
        build_pipeline(pipeline, launch_spec)
        submitted_us = now_us()
        result = pipeline.run()
        try:

            def rows() -> list[dict[str, Any]]:
                return read_rows(str(out / "agg"))[1]

            first_row_us, done_us = _wait(
                lambda: _completion_us(catch_up.published, rows()), 600, f"the backlog of {backlog} aggregated"
            )
            startup_s = (first_row_us - submitted_us) / _US

            # Phase 2 starts at a window boundary (+ the generator's 2 s of event-time jitter), so its groups never
            # mix with the backlog's.
            boundary_us = (now_us() // (WINDOW_S * _US) + 1) * WINDOW_S * _US
            time.sleep((boundary_us - now_us()) / _US)
            steady = _Producer(bootstrap, topic)
            spec = parse_synthetic_uri(f"synthetic://?rate={rate}&seed=202&{_CLEAN}")
            started = time.monotonic()
            for _, arrival_us, payload in generate_block(spec, 0, rate * seconds, anchor_us=boundary_us + 2 * _US):
                delay = (arrival_us - now_us()) / _US
                if delay > 0:
                    time.sleep(delay)
                steady.send(payload)
            steady.flush()
            produced_s = time.monotonic() - started
            load_end_us = now_us()
            completion = _wait(
                lambda: _completion_us(steady.published, rows()), early_firing + 120, "the steady load aggregated"
            )
            measured = latencies(steady.published, rows())
        finally:
            result.cancel()

    total = sum(len(times) for times in steady.published.values())
    return {
        "runner": "FlinkRunner (Beam Java 2.56 job server, Flink 1.16 session cluster)",
        "parallelism": parallelism,
        "checkpointing_interval_ms": checkpointing_interval,
        "max_bundle_time_ms": max_bundle_time_mills or "Beam's default (1000)",
        "job_startup_s": round(startup_s, 1),
        "catch_up_events": backlog,
        "catch_up_events_per_s": round(backlog / max((done_us - first_row_us) / _US, 1e-9)),
        "steady_offered_events_per_s": rate,
        "steady_achieved_publish_events_per_s": round(total / produced_s),
        "steady_seconds": seconds,
        "kept_up": (completion[1] - load_end_us) / _US <= early_firing + 10,
        "drain_after_load_s": round((completion[1] - load_end_us) / _US, 1),
        "early_firing_s": early_firing,
        "latency_events": len(measured),
        "latency_p50_s": round(percentile(measured, 50), 2),
        "latency_p99_s": round(percentile(measured, 99), 2),
        "latency_max_s": round(max(measured), 2) if measured else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flink_kafka", description=__doc__.split("\n")[0])
    parser.add_argument("--backlog", type=int, default=20_000, help="records in the topic before the job starts")
    parser.add_argument("--rate", type=int, default=200, help="steady load, records/s")
    parser.add_argument("--seconds", type=int, default=60, help="steady load duration")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--early_firing", type=int, default=1, help="seconds between early panes")
    parser.add_argument("--checkpointing_interval", type=int, default=None, help="ms; default: no checkpoints")
    parser.add_argument("--max_bundle_time_mills", type=int, default=None, help="ms; default: Beam's (1000)")
    parser.add_argument("--bootstrap", default=None, help="a running broker (default: start a private one)")
    parser.add_argument("--flink_master", default=None, help="a running cluster's REST address (default: start one)")
    args = parser.parse_args(argv)
    results = run_benchmark(**vars(args))
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
