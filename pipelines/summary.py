"""What a finished run did, from its metrics and its output files, as a readable report."""

from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from transforms.metrics import NAMESPACE as METRICS_NAMESPACE


def counters(result: PipelineResult) -> dict[str, int]:
    """The pipeline's own counters by name (committed values where the runner reports them)."""
    values: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        values[counter.key.metric.name] = values.get(counter.key.metric.name, 0) + int(value or 0)
    return values


def read_rows(prefix: str) -> tuple[list[str], list[dict[str, Any]]]:
    """The files a local JSON-lines sink wrote under ``prefix`` and their rows."""
    files = sorted(glob.glob(f"{prefix}-*.jsonl"))
    rows: list[dict[str, Any]] = []
    for path in files:
        with open(path, "rb") as handle:
            rows.extend(orjson.loads(line) for line in handle if line.strip())
    return files, rows


def final_panes(rows: list[dict[str, Any]]) -> dict[tuple, dict[str, Any]]:
    """The last pane (highest pane_index) of each (window, event_type, key): the complete result."""
    finals: dict[tuple, dict[str, Any]] = {}
    for row in rows:
        group = (row["window_start"], row["window_end"], row["event_type"], row["key"])
        best = finals.get(group)
        if best is None or row["pane_index"] > best["pane_index"]:
            finals[group] = row
    return finals


@dataclass
class RunSummary:
    seconds: float
    mode: str
    counters: dict[str, int]
    aggregate_files: list[str] = field(default_factory=list)
    dead_letter_files: list[str] = field(default_factory=list)
    aggregate_rows: list[dict[str, Any]] = field(default_factory=list)
    dead_letter_rows: list[dict[str, Any]] = field(default_factory=list)
    # Where results went when not to local files (BigQuery, Pub/Sub, Kafka): the summary cannot read them back.
    remote_sinks: list[str] = field(default_factory=list)

    @property
    def finals(self) -> dict[tuple, dict[str, Any]]:
        return final_panes(self.aggregate_rows)

    @property
    def aggregated_events(self) -> int:
        return sum(row["event_count"] for row in self.finals.values())

    def conserved(self) -> bool:
        read = self.counters.get("records_read", 0)
        return read == self.aggregated_events + len(self.dead_letter_rows) + self.counters.get("duplicates", 0)

    def render(self) -> str:
        c = self.counters
        finals = self.finals
        windows = {(k[0], k[1]) for k in finals}
        panes = Counter(row["pane_timing"] for row in self.aggregate_rows)
        codes = Counter(row["error_code"] for row in self.dead_letter_rows)
        keys: Counter[str] = Counter()
        for row in finals.values():
            keys[f"{row['event_type']} / {row['key']}"] += row["event_count"]
        read = c.get("records_read", 0)
        duplicates = c.get("duplicates", 0)

        def line(label: str, value: int, note: str = "") -> str:
            return f"  {label:<24}{value:>8}" + (f"   {note}" if note else "")

        lines = [
            f"realtime-analytics: run finished in {self.seconds:.1f} s ({self.mode})",
            "",
            line("records read", read),
            line("valid events", c.get("events_valid", 0)),
            line("duplicates dropped", duplicates),
            line("too late", c.get("too_late", 0), "(in the dead letter as too_late)"),
            line("dead letters", len(self.dead_letter_rows)),
        ]
        for code, count in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"      {code:<24}{count:>4}")
        pane_note = ", ".join(f"{t} {panes[t]}" for t in ("EARLY", "ON_TIME", "LATE") if panes[t])
        lines += [
            line("aggregated events", self.aggregated_events, "(final pane of each window and group)"),
            line("windows", len(windows)),
            line("aggregate rows", len(self.aggregate_rows), pane_note),
            f"  {'conservation':<24}{read} read = {self.aggregated_events} aggregated + "
            f"{len(self.dead_letter_rows)} dead letters + {duplicates} duplicates: "
            + ("ok" if self.conserved() else "MISMATCH"),
        ]
        if self.remote_sinks:
            lines[-1] = (
                f"  {'conservation':<24}not checked here: results went to {', '.join(self.remote_sinks)} "
                "(count them there: read = final-pane event_count + dead letters + duplicates)"
            )
        if keys:
            lines += ["", "  top event_type / key by events:"]
            for name, count in keys.most_common(5):
                lines.append(f"      {name:<40}{count:>6}")
        lines += ["", "  files:"]
        for path in self.aggregate_files + self.dead_letter_files + self.remote_sinks:
            lines.append(f"      {path}")
        return "\n".join(lines)
