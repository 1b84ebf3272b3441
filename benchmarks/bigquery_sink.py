"""BigQuery sink throughput per write method, against the local emulator (local-bigquery).

python -m benchmarks.bigquery_sink --rows 20000            # starts its own emulator
python -m benchmarks.bigquery_sink --rest http://127.0.0.1:19050 --grpc 127.0.0.1:19060   # a running one

Writes the same aggregate rows (real HLL++ sketches of 1-50 users) into a provisioned table with each method, in a
batch pipeline on the FnApiRunner (one process): ``Create(rows) | WriteToBigQueryTable``. Reports the pipeline's wall
time and checks the table holds every row once. The emulator (DuckDB behind a Python REST/gRPC server) is the
bottleneck, not BigQuery: the numbers compare the two code paths on one machine, they do not predict production.
"""

from __future__ import annotations

import argparse
import base64
import random
import time
import uuid

import apache_beam as beam
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from pipelines.release import provision
from schemas import AGGREGATES_TABLE
from services import BigQueryEmulator
from transforms.io.bigquery import STORAGE_WRITE_API, STREAMING_INSERTS, WriteToBigQueryTable, bigquery_client
from transforms.sketch import DistinctSketch
from transforms.timefmt import format_rfc3339_us

MINUTE_US = 60_000_000


def aggregate_rows(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    start = 1_704_067_200_000_000  # 2024-01-01T00:00:00Z
    rows = []
    for index in range(count):
        users = rng.randint(1, 50)
        sketch = DistinctSketch.of(f"user-{rng.randint(0, 10_000)}-{user}" for user in range(users))
        window = start + (index // 20) * MINUTE_US
        rows.append(
            {
                "window_start": format_rfc3339_us(window),
                "window_end": format_rfc3339_us(window + MINUTE_US),
                "event_type": rng.choice(("click", "view", "purchase")),
                "key": f"/page/{index % 20}",
                "event_count": users * 2,
                "value_sum": round(rng.random() * 100, 2),
                "distinct_users": sketch.estimate(),
                "distinct_users_sketch": base64.b64encode(sketch.to_bytes()).decode("ascii"),
                "pane_timing": "ON_TIME",
                "pane_index": 0,
                "is_last_pane": True,
                "emitted_at": format_rfc3339_us(window + 2 * MINUTE_US),
            }
        )
    return rows


def write_once(rows: list[dict], rest: str, grpc: str, method: str, project: str) -> tuple[float, int]:
    dataset = f"bench_{uuid.uuid4().hex[:8]}"
    assert provision.main([f"--dataset={project}.{dataset}", f"--endpoint={rest}"]) == 0
    sink = WriteToBigQueryTable(
        f"bigquery://{project}.{dataset}.aggregates",
        AGGREGATES_TABLE,
        method,
        endpoint=rest,
        storage_endpoint=grpc if method == STORAGE_WRITE_API else None,
    )
    started = time.perf_counter()
    with beam.Pipeline(runner=FnApiRunner()) as pipeline:
        _ = pipeline | beam.Create(rows, reshuffle=False) | sink
    seconds = time.perf_counter() - started
    client = bigquery_client(project, rest)
    try:
        stored = next(iter(client.query(f"SELECT COUNT(*) AS n FROM `{project}.{dataset}.aggregates`").result()))["n"]
        client.delete_dataset(f"{project}.{dataset}", delete_contents=True)
    finally:
        client.close()
    return seconds, stored


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rest", help="a running emulator's REST endpoint (default: start one)")
    parser.add_argument("--grpc", help="a running emulator's gRPC address")
    parser.add_argument("--project", default="local-project")
    parser.add_argument("--methods", default=f"{STREAMING_INSERTS},{STORAGE_WRITE_API}")
    args = parser.parse_args()
    rows = aggregate_rows(args.rows)
    size = sum(len(str(r)) for r in rows) / len(rows)
    emulator = None
    rest, grpc = args.rest, args.grpc
    if not rest:
        emulator = BigQueryEmulator(project=args.project)
        emulator.start()
        emulator.wait_healthy()
        rest, grpc = emulator.endpoint, emulator.grpc_host
    try:
        print(f"{args.rows} aggregate rows (~{size:.0f} bytes as JSON), batch, FnApiRunner, emulator {rest} {grpc}")
        for method in args.methods.split(","):
            seconds, stored = write_once(rows, rest, grpc, method, args.project)
            check = "ok" if stored == len(rows) else f"MISMATCH: {stored} stored"
            print(f"  {method:<18} {seconds:7.1f} s  {len(rows) / seconds:8.0f} rows/s  ({check})")
    finally:
        if emulator is not None:
            emulator.stop()


if __name__ == "__main__":
    main()
