"""Streaming from Kafka on Flink (and Prism): catch-up events/s against a plain consumer loop, latency, memory.

    python -m benchmarks.flink_kafka catch-up --backlog 200000                # private broker + Flink cluster
    python -m benchmarks.flink_kafka catch-up --backlog 1000000 --large 100   # + 100 records of max_payload_bytes
    python -m benchmarks.flink_kafka catch-up --backlog 200000 --taskmanagers 2 --parallelism 2
    python -m benchmarks.flink_kafka latency --rate 2000 --seconds 60 --max_bundle_time_mills 100
    python -m benchmarks.flink_kafka prism --backlog 100000
    python -m benchmarks.flink_kafka catch-up --bootstrap 127.0.0.1:19092 --flink_master 127.0.0.1:18081  # services up

catch-up: ``backlog`` records are in a fresh topic (``partitions`` of them) before the job starts; the job reads from
the earliest offset. Events/s from the first aggregate row to the moment every record is counted in an emitted row:
what the job sustains when it never waits for input (job start-up excluded). In the same run, on the same topic, the
plain loop (``benchmarks/plain_loop.py``: the project's own parse, validate, dedup and windowed aggregation, no Beam)
consumes the backlog with confluent-kafka: its events/s is the baseline, and its final counts must equal the job's.
While the job runs, TaskManager heap and direct memory and the SDK workers' RSS are sampled (``flink_monitor.py``).
``large`` records of exactly ``--max_payload_bytes`` (valid events padded in ``properties``) are spread through the
backlog: the sizing check of docs/runners-flink.md.

latency: ``rate`` records/s produced in real time for ``seconds`` to a job that is already running. Per record,
latency = ``emitted_at`` of the first aggregate row whose ``event_count`` includes it - the record's Kafka timestamp
(publish time); p50 and p99 over every record published (one never counted within ``early_firing`` + 120 s of the end
of the load counts as infinitely late). Rows are emitted by early panes every ``early_firing`` seconds (default 1).

prism: the catch-up on Prism (the cached binary, Kafka through the Beam Java 2.73 expansion service, LOOPBACK Python).

The records are the synthetic generator's, clean (no bad, duplicate or late ones), so each lands in exactly one group.
Within a group a record is counted in the first pane whose count exceeds its place in publish order: keyed shuffles
keep that order per key for one partition. Not part of the test suite (numbers depend on the machine).
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson

from pipelines.summary import read_rows
from transforms.io.synthetic import generate_block, parse_synthetic_uri
from transforms.timefmt import format_rfc3339_us, now_us, parse_rfc3339_us

WINDOW_S = 10
_US = 1_000_000
MAX_PAYLOAD_BYTES = 1 << 20  # the pipeline's default --max_payload_bytes
# Clean records: every one is valid, unique and on time.
_CLEAN = "keys=50&users=5000&event_types=4&bad=0&duplicates=0&late=0&too_late=0"
# Topic limit for max-size records: the value plus the record batch's framing.
_TOPIC_MAX_MESSAGE_BYTES = 2 * MAX_PAYLOAD_BYTES

Group = tuple[str, str, Any]  # (window_start, event_type, key)


def _group(payload: bytes) -> Group:
    event = orjson.loads(payload)
    at = event["event_time"]
    at_us = parse_rfc3339_us(at) if isinstance(at, str) else at * 1000
    start = at_us - at_us % (WINDOW_S * _US)
    return format_rfc3339_us(start), event["event_type"], event.get("page")


def pad_to(payload: bytes, size: int) -> bytes:
    """The JSON event ``payload`` padded to exactly ``size`` bytes with a ``properties.pad`` string (still valid)."""
    event = orjson.loads(payload)
    event.setdefault("properties", {})["pad"] = ""
    base = len(orjson.dumps(event))
    if base > size:
        raise ValueError(f"the event alone is {base} bytes, more than {size}")
    event["properties"]["pad"] = "x" * (size - base)
    padded = orjson.dumps(event)
    assert len(padded) == size
    return padded


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


def _final_counts(rows: list[dict[str, Any]]) -> dict[Group, int]:
    """The largest count emitted per group (panes accumulate, so that is the final one)."""
    counts: dict[Group, int] = {}
    for row in rows:
        group = (row["window_start"], row["event_type"], row["key"])
        counts[group] = max(counts.get(group, 0), row["event_count"])
    return counts


class _Producer:
    def __init__(self, bootstrap: str, topic: str, partitions: int = 1) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 5,
                "enable.idempotence": True,
                "message.max.bytes": _TOPIC_MAX_MESSAGE_BYTES,
            }
        )
        self._topic, self._partitions, self._sent = topic, partitions, 0
        self.published: dict[Group, list[int]] = defaultdict(list)
        self.errors: list[str] = []

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.errors.append(str(err))
            return
        self.published[_group(msg.value())].append(msg.timestamp()[1] * 1000)

    def send(self, payload: bytes) -> None:
        # Round-robin over the partitions, and keyed by page within one: a group's records keep their order.
        partition = self._sent % self._partitions
        self._sent += 1
        while True:
            try:
                self._producer.produce(self._topic, value=payload, partition=partition, on_delivery=self._delivered)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self._producer.poll(0)

    def flush(self) -> None:
        if self._producer.flush(300) or self.errors:
            raise RuntimeError(f"producing failed: {self.errors[:3]}")


def create_topic(bootstrap: str, partitions: int = 1) -> str:
    """A fresh topic that takes records of max_payload_bytes."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"bench-{uuid.uuid4().hex[:8]}"
    topic = NewTopic(name, partitions, 1, config={"max.message.bytes": str(_TOPIC_MAX_MESSAGE_BYTES)})
    # The client must outlive the result: a temporary one is freed at once and fails the request ("Broker handle
    # destroyed for termination").
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([topic])[name].result(timeout=30)
    return name


def produce_backlog(bootstrap: str, topic: str, count: int, partitions: int = 1, large: int = 0) -> _Producer:
    """``count`` clean records with event times in the last minute, ``large`` of them (evenly spread) padded to
    max_payload_bytes."""
    producer = _Producer(bootstrap, topic, partitions)
    spec = parse_synthetic_uri(f"synthetic://?rate={max(count / 60, 1)}&seed=101&{_CLEAN}")
    every = count // large if large else 0
    for seq, _, payload in generate_block(spec, 0, count, anchor_us=now_us() - 60 * _US):
        producer.send(pad_to(payload, MAX_PAYLOAD_BYTES) if every and seq % every == every // 2 else payload)
    producer.flush()
    return producer


@contextlib.contextmanager
def _services(
    bootstrap: str | None, flink_master: str | None, taskmanagers: int = 1, flink: bool = True
) -> Iterator[tuple[str, str | None, int | None]]:
    """The given addresses, or a private broker and cluster started (and stopped) here; the cluster's process (its
    supervisor) when started here, for the monitor."""
    with contextlib.ExitStack() as stack:
        root_pid = None
        if bootstrap is None:
            from services import KafkaBroker

            bootstrap = stack.enter_context(KafkaBroker()).bootstrap_servers
        if flink and flink_master is None:
            from services import FlinkCluster

            cluster = FlinkCluster(taskmanagers=taskmanagers, slots=1 if taskmanagers > 1 else 2)
            flink_master = stack.enter_context(cluster).flink_master
            root_pid = cluster.pid
        yield bootstrap, flink_master, root_pid


def _wait(condition: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(1.0)
    raise TimeoutError(f"{what} within {timeout_s:.0f} s")


def _job_argv(bootstrap: str, topic: str, out: Path, runner: list[str], extra: list[str]) -> list[str]:
    return [
        f"--source=kafka://{bootstrap}/{topic}",
        f"--sink={out / 'agg'}",
        f"--dead_letter_sink={out / 'dlq'}",
        f"--kafka_consumer_group=bench-{uuid.uuid4().hex[:8]}",
        "--kafka_start_offset=earliest",
        f"--window_size={WINDOW_S}",
        "--streaming",
        *runner,
        *extra,
    ]


@contextlib.contextmanager
def _job(argv: list[str]) -> Iterator[None]:
    """The main job built from ``argv`` and submitted; cancelled on exit."""
    from pipelines.graph import build_pipeline, new_pipeline
    from pipelines.runners import cancel_on_flink_cluster
    from pipelines.spec import resolve

    spec = resolve(argv)
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    result = pipeline.run()
    try:
        yield
    finally:
        result.cancel()
        cancel_on_flink_cluster(spec.runner)  # Beam's cancel leaves the cluster's job running


def plain_kafka_loop(bootstrap: str, topic: str, count: int, argv: list[str]) -> dict[str, Any]:
    """The plain loop on the topic: confluent-kafka consumes ``count`` records from the earliest offset in batches;
    parse, validate, dedup and windowed aggregation with the project's functions and the job's configuration."""
    from confluent_kafka import Consumer

    from benchmarks.plain_loop import run_plain_loop_on
    from pipelines.spec import resolve

    config = resolve(argv).analytics
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"plain-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    source = f"kafka://{bootstrap}/{topic}"
    seen = 0

    def batches() -> Iterator[tuple[str, list[bytes]]]:
        nonlocal seen
        deadline = time.monotonic() + 600
        while seen < count and time.monotonic() < deadline:
            messages = [m for m in consumer.consume(num_messages=10_000, timeout=1.0) if m.error() is None]
            seen += len(messages)
            if messages:
                yield source, [m.value() for m in messages]

    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        counters = run_plain_loop_on(batches(), out, config)
        seconds = time.perf_counter() - started
        finals = {
            (row["window_start"], row["event_type"], row["key"]): row["event_count"]
            for row in read_rows(str(Path(out) / "aggregates"))[1]
        }
    consumer.close()
    if seen < count:
        raise RuntimeError(f"the plain loop consumed {seen} of {count} records")
    return {"seconds": seconds, "events_per_s": round(count / seconds), "counters": counters, "finals": finals}


def run_catch_up(
    backlog: int = 200_000,
    partitions: int | None = None,
    parallelism: int = 1,
    taskmanagers: int = 1,
    large: int = 0,
    runner: str = "flink",
    max_bundle_size: int | None = None,
    max_bundle_time_mills: int | None = None,
    bootstrap: str | None = None,
    flink_master: str | None = None,
    plain: bool = True,
) -> dict[str, Any]:
    """The catch-up (see the module doc) on Flink or Prism; returns the measurements."""
    from benchmarks.flink_monitor import ClusterMonitor

    partitions = partitions or parallelism
    flink = runner == "flink"
    with (
        _services(bootstrap, flink_master, taskmanagers, flink=flink) as (bootstrap, flink_master, root_pid),
        tempfile.TemporaryDirectory() as tmp,
    ):
        topic = create_topic(bootstrap, partitions)
        produced = time.monotonic()
        backlog_producer = produce_backlog(bootstrap, topic, backlog, partitions, large)
        produce_s = time.monotonic() - produced
        out = Path(tmp)
        if flink:
            runner_args = ["--runner=FlinkRunner", f"--flink_master={flink_master}", f"--parallelism={parallelism}"]
        else:
            runner_args = ["--runner=PrismRunner"]
        extra = [
            *([f"--max_bundle_size={max_bundle_size}"] if max_bundle_size else []),
            *([f"--max_bundle_time_mills={max_bundle_time_mills}"] if max_bundle_time_mills else []),
        ]
        argv = _job_argv(bootstrap, topic, out, runner_args, ["--early_firing=1", *extra])
        baseline = plain_kafka_loop(bootstrap, topic, backlog, argv) if plain else None
        published = backlog_producer.published

        def rows() -> list[dict[str, Any]]:
            return read_rows(str(out / "agg"))[1]

        monitor = ClusterMonitor(f"http://{flink_master}", root_pid=root_pid) if flink else contextlib.nullcontext()
        submitted_us = now_us()
        with monitor, _job(argv):
            first_row_us, done_us = _wait(
                lambda: _completion_us(published, rows()), 7200, f"the backlog of {backlog:,} aggregated"
            )
            finals = _final_counts(rows())
    seconds = (done_us - first_row_us) / _US
    rate = backlog / max(seconds, 1e-9)
    expected = {group: len(times) for group, times in published.items()}
    result: dict[str, Any] = {
        "runner": _runner_name(runner, parallelism, taskmanagers),
        "catch_up_events": backlog,
        "partitions": partitions,
        "large_records": large,
        "produce_s": round(produce_s, 1),
        "job_startup_s": round((first_row_us - submitted_us) / _US, 1),
        "catch_up_s": round(seconds, 1),
        "catch_up_events_per_s": round(rate),
        "counts_exact": finals == expected,
    }
    if baseline is not None:
        result.update(
            plain_loop_events_per_s=baseline["events_per_s"],
            ratio_to_plain_loop=round(rate / baseline["events_per_s"], 4),
            plain_loop_counts_equal=baseline["finals"] == expected,
        )
    if flink:
        result.update(monitor.peaks())
    return result


def _runner_name(runner: str, parallelism: int = 1, taskmanagers: int = 1) -> str:
    from pipelines.local_run import jars

    if runner == "prism":
        from pipelines.runners import PRISM_VERSION

        return f"PrismRunner {PRISM_VERSION} (Kafka: Beam Java {jars.BEAM_JAVA_VERSION} expansion)"
    return (
        f"FlinkRunner (Beam Java {jars.BEAM_FLINK_VERSION} job server, Flink {jars.FLINK_VERSION} session cluster, "
        f"{taskmanagers} TaskManager{'s' if taskmanagers > 1 else ''}, parallelism {parallelism})"
    )


def run_latency(
    rate: int = 2000,
    seconds: int = 60,
    early_firing: int = 1,
    max_bundle_size: int | None = None,
    max_bundle_time_mills: int | None = None,
    checkpointing_interval: int | None = None,
    bootstrap: str | None = None,
    flink_master: str | None = None,
) -> dict[str, Any]:
    """Steady load on a running job (see the module doc); returns p50/p99 latency and whether the job kept up."""
    with (
        _services(bootstrap, flink_master) as (bootstrap, flink_master, _),
        tempfile.TemporaryDirectory() as tmp,
    ):
        topic = create_topic(bootstrap)
        out = Path(tmp)
        runner = ["--runner=FlinkRunner", f"--flink_master={flink_master}"]
        extra = [
            f"--early_firing={early_firing}",
            *([f"--max_bundle_size={max_bundle_size}"] if max_bundle_size else []),
            *([f"--max_bundle_time_mills={max_bundle_time_mills}"] if max_bundle_time_mills else []),
            *([f"--checkpointing_interval={checkpointing_interval}"] if checkpointing_interval else []),
        ]
        argv = _job_argv(bootstrap, topic, out, runner, extra)

        def rows() -> list[dict[str, Any]]:
            return read_rows(str(out / "agg"))[1]

        with _job(argv):
            # Warm-up: one record, counted once the whole job is up (every worker started).
            warm = _Producer(bootstrap, topic)
            warm.send(next(generate_block(parse_synthetic_uri(f"synthetic://?seed=7&{_CLEAN}"), 0, 1, now_us()))[2])
            warm.flush()
            submitted = time.monotonic()
            _wait(lambda: _completion_us(warm.published, rows()), 600, "the job up (a warm-up record counted)")
            startup_s = time.monotonic() - submitted
            # The load starts at a window boundary (+ the generator's 2 s of event-time jitter), so its groups never
            # mix with the warm-up record's.
            boundary_us = (now_us() // (WINDOW_S * _US) + 1) * WINDOW_S * _US
            time.sleep((boundary_us - now_us()) / _US)
            steady = _Producer(bootstrap, topic)
            spec = parse_synthetic_uri(f"synthetic://?rate={rate}&seed=202&{_CLEAN}")
            payloads = list(generate_block(spec, 0, rate * seconds, anchor_us=boundary_us + 2 * _US))
            started = time.monotonic()
            for _, arrival_us, payload in payloads:
                delay = (arrival_us - now_us()) / _US
                if delay > 0:
                    time.sleep(delay)
                steady.send(payload)
            steady.flush()
            produced_s = time.monotonic() - started
            load_end_us = now_us()
            try:
                completion = _wait(
                    lambda: _completion_us(steady.published, rows()), early_firing + 120, "the load aggregated"
                )
            except TimeoutError:
                completion = None
            measured = latencies(steady.published, rows())
    total = sum(len(times) for times in steady.published.values())
    # Records never counted within the wait are infinitely late for the percentiles.
    with_missing = measured + [math.inf] * (total - len(measured))
    return {
        "runner": _runner_name("flink"),
        "job_startup_s": round(startup_s, 1),
        "steady_offered_events_per_s": rate,
        "steady_achieved_publish_events_per_s": round(total / produced_s),
        "steady_seconds": seconds,
        "max_bundle_size": max_bundle_size or "Beam's default (1000)",
        "max_bundle_time_ms": max_bundle_time_mills or "Beam's default (1000)",
        "checkpointing_interval_ms": checkpointing_interval,
        "early_firing_s": early_firing,
        "kept_up": completion is not None and (completion[1] - load_end_us) / _US <= early_firing + 10,
        "drain_after_load_s": round((completion[1] - load_end_us) / _US, 1) if completion else None,
        "counted_share": round(len(measured) / total, 4) if total else 0.0,
        "latency_p50_s": round(percentile(with_missing, 50), 2),
        "latency_p99_s": round(percentile(with_missing, 99), 2),
        "latency_max_s": round(max(with_missing), 2) if with_missing else math.nan,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flink_kafka", description=__doc__.split("\n")[0])
    parser.add_argument("scenario", choices=["catch-up", "latency", "prism"])
    parser.add_argument("--backlog", type=int, default=200_000, help="catch-up: records in the topic at job start")
    parser.add_argument("--large", type=int, default=0, help="catch-up: how many of them are max_payload_bytes")
    parser.add_argument("--partitions", type=int, default=None, help="catch-up: default = --parallelism")
    parser.add_argument("--parallelism", type=int, default=1)
    parser.add_argument("--taskmanagers", type=int, default=1, help="of the private cluster (1 slot each if > 1)")
    parser.add_argument("--no-plain", dest="plain", action="store_false", help="catch-up: skip the plain loop")
    parser.add_argument("--rate", type=int, default=2000, help="latency: records/s")
    parser.add_argument("--seconds", type=int, default=60, help="latency: load duration")
    parser.add_argument("--early_firing", type=int, default=1, help="latency: seconds between early panes")
    parser.add_argument("--checkpointing_interval", type=int, default=None, help="latency: ms; default: none")
    parser.add_argument("--max_bundle_size", type=int, default=None, help="default: Beam's (1000)")
    parser.add_argument("--max_bundle_time_mills", type=int, default=None, help="ms; default: Beam's (1000)")
    parser.add_argument("--bootstrap", default=None, help="a running broker (default: start a private one)")
    parser.add_argument("--flink_master", default=None, help="a running cluster's REST address (default: start one)")
    args = parser.parse_args(argv)
    bundles = {"max_bundle_size": args.max_bundle_size, "max_bundle_time_mills": args.max_bundle_time_mills}
    where = {"bootstrap": args.bootstrap, "flink_master": args.flink_master}
    if args.scenario == "latency":
        results = run_latency(
            args.rate, args.seconds, args.early_firing, checkpointing_interval=args.checkpointing_interval,
            **bundles, **where,
        )  # fmt: skip
    else:
        results = run_catch_up(
            args.backlog,
            args.partitions,
            args.parallelism,
            args.taskmanagers,
            args.large,
            "prism" if args.scenario == "prism" else "flink",
            plain=args.plain,
            **bundles,
            **where,
        )
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
