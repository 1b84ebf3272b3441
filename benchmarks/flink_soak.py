"""Soak: the main job streaming at a steady rate on the Flink session cluster for a long time; memory must stay flat.

    python -m benchmarks.flink_soak --source kafka --minutes 30 --rate 200
    python -m benchmarks.flink_soak --source synthetic --minutes 30 --rate 200
    python -m benchmarks.flink_soak --source synthetic --minutes 5 --rate 20 --flink_master 127.0.0.1:18081

``kafka``: a producer publishes ``rate`` clean-but-realistic records/s (the synthetic generator's mix: bad, duplicate
and late records included) to a fresh topic for the whole run; ``synthetic``: the job generates them itself
(``synthetic://?rate=R``, unbounded on Flink). Early panes every second, 10 s windows, checkpoints every 10 s
(``--checkpoint`` 0 turns them off). Every ``interval`` seconds the TaskManagers' heap and direct memory (Flink's REST
metrics) and the SDK workers' RSS are sampled (``flink_monitor.py``).

Flat means: after the first ``warmup`` minutes, the TaskManagers' live heap (what a full collection leaves: every
minute the monitor runs ``jcmd GC.run`` and reads ``GC.heap_info``) and the peaks of direct memory and worker RSS grow
by less than ``tolerance`` from the first 5-minute slice to the last, and the job neither failed nor restarted. Only
the cluster started here counts (another cluster on the machine, a test suite's, is not summed in). The heap used
between collections is no measure: G1 leaves old garbage until the heap is 45 % full, so its 5-minute minimum rose
from ~77 to ~517 MB in 30 minutes on a Kafka job whose live heap stayed at ~72 MB. The verdict and the slices are
printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.flink_monitor import ClusterMonitor, Sample, rest_get

SLICE_S = 300
_REALISTIC = "keys=50&users=5000&event_types=4&bad=0.02&duplicates=0.02&late=0.02"


class _SteadyProducer(threading.Thread):
    """Publishes the synthetic generator's records at ``rate``/s until stopped."""

    def __init__(self, bootstrap: str, topic: str, rate: int) -> None:
        super().__init__(daemon=True)
        from confluent_kafka import Producer

        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True})
        self._topic, self._rate = topic, rate
        self._stopping = threading.Event()  # not _stop: Thread has a method of that name
        self.sent = 0
        self.errors: list[str] = []

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self.errors.append(str(err))

    def run(self) -> None:
        from transforms.io.synthetic import BLOCK, generate_block, parse_synthetic_uri
        from transforms.timefmt import now_us

        spec = parse_synthetic_uri(f"synthetic://?rate={self._rate}&seed=303&{_REALISTIC}")
        started_us = now_us()
        block = 0
        while not self._stopping.is_set():
            # Arrival (and event) times from the wall clock: a block of BLOCK records every BLOCK/rate seconds.
            anchor = started_us + int(block * BLOCK * 1_000_000 / self._rate)
            for _, arrival_us, payload in generate_block(spec, block, anchor_us=anchor):
                delay = (arrival_us - now_us()) / 1_000_000
                if delay > 0 and self._stopping.wait(delay):
                    break
                self._producer.produce(self._topic, value=payload, on_delivery=self._delivered)
                self._producer.poll(0)
                self.sent += 1
            block += 1
        self._producer.flush(60)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=120)


def slices(samples: list[Sample], warmup_s: float, slice_s: float = SLICE_S) -> list[dict[str, float]]:
    """Per ``slice_s`` after the warm-up: minimum heap (the live set's envelope), peak direct memory, peak RSS (MB)."""
    kept = [s for s in samples if s.at_s >= warmup_s]
    groups: dict[int, list[Sample]] = {}
    for sample in kept:
        groups.setdefault(int((sample.at_s - warmup_s) // slice_s), []).append(sample)
    if kept and len(groups) > 1 and (kept[-1].at_s - warmup_s) % slice_s < slice_s / 2:
        # A last slice of less than half a slice (the run's final seconds) has no live-heap sample to judge by.
        groups.pop(max(groups))
    return [
        {
            "from_min": round((warmup_s + index * slice_s) / 60, 1),
            "heap_min_mb": round(min(s.heap_mb for s in group), 1),
            "heap_live_mb": _live(group),
            "heap_max_mb": round(max(s.heap_mb for s in group), 1),
            "direct_max_mb": round(max(s.direct_mb for s in group), 1),
            "python_rss_max_mb": round(max(s.python_rss_mb for s in group), 1),
            "java_worker_rss_max_mb": round(max(s.java_worker_rss_mb for s in group), 1),
        }
        for index, group in sorted(groups.items())
    ]


def _live(group: list[Sample]) -> float | None:
    """The largest live heap (after a full GC) sampled in the slice, None when none was."""
    live = [s.heap_live_mb for s in group if s.heap_live_mb is not None]
    return round(max(live), 1) if live else None


def verdict(parts: list[dict[str, float]], tolerance: float) -> dict[str, Any]:
    """Growth from the first slice to the last of each series, and whether every one stayed within ``tolerance``
    (relative, with a floor of 16 MB so that noise on small values does not count)."""
    if len(parts) < 2:
        return {"flat": None, "why": "fewer than two slices after the warm-up"}
    first, last = parts[0], parts[-1]
    growth = {}
    flat = True
    # The live heap when it was sampled: the heap's 5-minute minimum rises with G1's uncollected old garbage.
    heap = (
        "heap_live_mb"
        if first.get("heap_live_mb") is not None and last.get("heap_live_mb") is not None
        else "heap_min_mb"
    )
    for key in (heap, "direct_max_mb", "python_rss_max_mb", "java_worker_rss_max_mb"):
        grew = last[key] - first[key]
        growth[key.replace("_mb", "_growth_mb")] = round(grew, 1)
        flat &= grew <= max(16.0, tolerance * first[key])
    return {"flat": flat, **growth}


@contextlib.contextmanager
def _services(
    source: str, bootstrap: str | None, flink_master: str | None
) -> Iterator[tuple[str | None, str, int | None]]:
    with contextlib.ExitStack() as stack:
        root_pid = None
        if source == "kafka" and bootstrap is None:
            from services import KafkaBroker

            bootstrap = stack.enter_context(KafkaBroker()).bootstrap_servers
        if flink_master is None:
            from services import FlinkCluster

            cluster = stack.enter_context(FlinkCluster())
            flink_master, root_pid = cluster.flink_master, cluster.pid
        yield bootstrap, flink_master, root_pid


def run_soak(
    source: str = "kafka",
    minutes: float = 30,
    rate: int = 200,
    interval: float = 10,
    warmup_minutes: float = 5,
    tolerance: float = 0.1,
    checkpoint_ms: int = 10_000,
    bootstrap: str | None = None,
    flink_master: str | None = None,
) -> dict[str, Any]:
    """Runs the soak (see the module doc); returns the slices, the verdict and the job's state at the end."""
    from benchmarks.flink_kafka import _job
    from services.kafka import create_topics

    with (
        _services(source, bootstrap, flink_master) as (bootstrap, flink_master, root_pid),
        tempfile.TemporaryDirectory() as tmp,
    ):
        rest = f"http://{flink_master}"
        out = Path(tmp)
        producer = None
        if source == "kafka":
            topic = create_topics(bootstrap, "soak")["soak"]
            uri = f"kafka://{bootstrap}/{topic}"
            kafka = [f"--kafka_consumer_group=soak-{uuid.uuid4().hex[:8]}", "--kafka_start_offset=earliest"]
        else:
            uri = f"synthetic://?rate={rate}&seed=303&{_REALISTIC}"
            kafka = []
        argv = [
            f"--source={uri}",
            f"--sink={out / 'agg'}",
            f"--dead_letter_sink={out / 'dlq'}",
            *kafka,
            "--window_size=10",
            "--early_firing=1",
            "--allowed_lateness=300",
            "--runner=FlinkRunner",
            f"--flink_master={flink_master}",
            "--streaming",
            *([f"--checkpointing_interval={checkpoint_ms}"] if checkpoint_ms else []),
        ]
        before = {job["id"] for job in rest_get(rest, "/jobs").get("jobs", [])}
        monitor = ClusterMonitor(rest, interval=interval, root_pid=root_pid, gc_every=60)
        with monitor, _job(argv):
            if source == "kafka":
                producer = _SteadyProducer(bootstrap, topic, rate)
                producer.start()
            deadline = time.monotonic() + minutes * 60
            job_id, state = None, "?"
            while time.monotonic() < deadline:
                time.sleep(min(30, max(0.0, deadline - time.monotonic())))
                jobs = [job for job in rest_get(rest, "/jobs").get("jobs", []) if job["id"] not in before]
                if jobs:
                    job_id, state = jobs[0]["id"], jobs[0]["status"]
                    if state in ("FAILED", "CANCELED", "FINISHED"):
                        break
            restarts = None
            if job_id:
                metrics = rest_get(rest, f"/jobs/{job_id}/metrics?get=numRestarts")
                restarts = int(float(metrics[0]["value"])) if metrics else 0
                exceptions = rest_get(rest, f"/jobs/{job_id}/exceptions").get("root-exception")
            if producer is not None:
                producer.stop()
        ran_min = round(max((s.at_s for s in monitor.samples), default=0) / 60, 1)
    parts = slices(monitor.samples, warmup_minutes * 60)
    result = {
        "source": source,
        "rate": rate,
        "minutes": ran_min,
        "job_state_at_end": state,
        "restarts": restarts,
        "root_exception": (exceptions or "")[:300] if job_id else None,
        "produced": producer.sent if producer else None,
        "heap_max_mb": round(monitor.heap_max_mb),
        "direct_max_mb": round(monitor.direct_max_mb),
        **verdict(parts, tolerance),
        "slices": parts,
    }
    if state not in ("RUNNING",) or restarts:
        result["flat"] = False
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.flink_soak", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=["kafka", "synthetic"], default="kafka")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=int, default=200, help="records/s")
    parser.add_argument("--interval", type=float, default=10, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=5, help="minutes not judged")
    parser.add_argument("--checkpoint", type=int, default=10_000, help="checkpoint interval, ms (0: none)")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--flink_master", default=None)
    args = parser.parse_args(argv)
    result = run_soak(
        args.source,
        args.minutes,
        args.rate,
        args.interval,
        args.warmup,
        checkpoint_ms=args.checkpoint,
        bootstrap=args.bootstrap,
        flink_master=args.flink_master,
    )
    for key, value in result.items():
        if key != "slices":
            print(f"{key:<24}  {value}")
    for part in result["slices"]:
        print("  ", part)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
