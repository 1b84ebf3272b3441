"""The practical limit: the main job's work as one plain single-process Python loop, with the project's own code.

Reads the JSON-lines file, parses and validates every record (fast path + reference, ``BatchParser``), writes
every dead letter, deduplicates (``dedup.keep_first``), pre-aggregates per window slice (``windowing
.bundle_partials``), windows and merges (``Accumulator``) and writes one row per window and group: the same
functions, the same outputs as the Beam job, without Beam. Fixed and sliding windows (what the benchmark runs).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import orjson
from apache_beam.transforms.window import WindowFn
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

from transforms import dead_letter as dl
from transforms.aggregate import Accumulator, MergeAggregatesFn, aggregate_row
from transforms.analytics import AnalyticsConfig
from transforms.dedup import keep_first
from transforms.event_time import rows_of
from transforms.io.files import read_line_range
from transforms.parse_validate import BatchParser, dead_letters
from transforms.records import RecordBatch
from transforms.timefmt import now_us
from transforms.windowing import FOLD_ROWS, bundle_partials

_FINAL_PANE = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)


def run_plain_loop(path: str, out_dir: str, config: AnalyticsConfig | None = None) -> dict[str, int]:
    """Runs the job on ``path``; writes ``aggregates-plain.jsonl`` and ``dead_letter-plain.jsonl`` to ``out_dir``
    (named as the file sink names its shards, so ``read_rows(f"{out_dir}/aggregates")`` reads them); counters."""
    batches = ((path, lines) for lines in read_line_range(path, 0, os.path.getsize(path)))
    return run_plain_loop_on(batches, out_dir, config)


def run_plain_loop_on(
    batches: Iterable[tuple[str, list[bytes]]], out_dir: str, config: AnalyticsConfig | None = None
) -> dict[str, int]:
    """The same loop on batches of (source name, payloads) from anywhere (a file, a Kafka consumer)."""
    cfg = config or AnalyticsConfig()
    window_fn = cfg.window.window_fn()
    if window_fn.is_merging():
        raise ValueError("the plain loop runs fixed and sliding windows")
    parser = BatchParser(cfg.format, cfg.key_field, cfg.max_clock_skew_s, cfg.max_payload_bytes)
    horizon_us = int(cfg.dedup_horizon_s * 1_000_000)
    os.makedirs(out_dir, exist_ok=True)
    counters = {"records_read": 0, "events_valid": 0, "dead_letters": 0, "duplicates": 0, "aggregate_rows": 0}
    first_seen: dict[str, int] = {}
    partials = bundle_partials(window_fn)
    held: list = []
    with open(Path(out_dir) / "dead_letter-plain.jsonl", "wb") as dead:
        for source, lines in batches:
            batch = RecordBatch(source, lines)
            parsed, rejected = parser.parse(batch)
            checked, invalid = parser.validate(parsed)
            written = [orjson.dumps(r) for r in dead_letters(batch, rejected, dl.STAGE_PARSE)]
            written += [orjson.dumps(r) for r in dead_letters(batch, invalid, dl.STAGE_VALIDATE)]
            if written:
                dead.write(b"\n".join(written) + b"\n")
            counters["records_read"] += len(lines)
            counters["dead_letters"] += len(written)
            counters["events_valid"] += len(checked.valid)
            kept, duplicates = keep_first(rows_of(batch, checked.valid, 0), first_seen, first_seen, horizon_us)
            counters["duplicates"] += duplicates
            held.extend(kept)
            if len(held) >= FOLD_ROWS:  # as the Beam job folds
                partials.merge(partials.fold(held))
                held = []
    partials.merge(partials.fold(held))
    finals: dict[tuple, Accumulator] = {}
    for timestamp_us, group, acc in partials.outputs():
        for window in window_fn.assign(WindowFn.AssignContext(Timestamp(micros=timestamp_us))):
            held = finals.get((window, group))
            if held is None:
                finals[(window, group)] = held = Accumulator()
            held.merge(acc)
    output = MergeAggregatesFn().extract_output
    with open(Path(out_dir) / "aggregates-plain.jsonl", "wb") as out:
        out.write(
            b"".join(
                orjson.dumps(aggregate_row(group, output(acc), window, _FINAL_PANE, now_us())) + b"\n"
                for (window, group), acc in finals.items()
            )
        )
    counters["aggregate_rows"] = len(finals)
    return counters
