"""What a run did, from its metrics and its output files, as a readable report that says only what it knows.

Counts that come from the sinks' rows (aggregated events, windows, aggregate rows by pane, dead letters by code)
are read back from local files; a sink the summary cannot read (BigQuery, Pub/Sub, Kafka) gives "not available",
or the pipeline's own counter where one counts the same thing, said as such. With sliding windows an event is in
``size / period`` windows: the summary counts it once.
"""

from __future__ import annotations

import glob
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.runners.runner import PipelineResult

from transforms.metrics import NAMESPACE as METRICS_NAMESPACE

NOT_AVAILABLE = "not available"


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
            # A streaming job stopped mid-write may leave a last line unfinished: what is whole is counted.
            for line in handle:
                if line.strip():
                    try:
                        rows.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        continue
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
    remote_aggregates: bool = False
    remote_dead_letters: bool = False
    # Sliding windows: how many windows each event is in (size / period); 1 for fixed and session windows.
    windows_per_event: int = 1
    # Stopped by the user (Ctrl-C) before the job ended: the counts are those so far.
    interrupted: bool = False
    # False when the runner gave no counters (Beam's Flink job server reports them only once a job has ended).
    counters_known: bool = True

    @property
    def finals(self) -> dict[tuple, dict[str, Any]]:
        return final_panes(self.aggregate_rows)

    @property
    def aggregated_events(self) -> int:
        """Events in the final panes, each counted once however many sliding windows hold it."""
        return sum(row["event_count"] for row in self.finals.values()) // self.windows_per_event

    @property
    def dead_letters(self) -> int:
        """Dead letters written: read back from the files, else the pipeline's own count."""
        if self.remote_dead_letters:
            return self.counters.get("dead_letters", 0)
        return len(self.dead_letter_rows)

    def conserved(self) -> bool:
        read = self.counters.get("records_read", 0)
        return read == self.aggregated_events + self.dead_letters + self.counters.get("duplicates", 0)

    def render(self) -> str:
        c = self.counters
        finals = self.finals
        windows = {(k[0], k[1]) for k in finals}
        panes = Counter(row["pane_timing"] for row in self.aggregate_rows)
        read = c.get("records_read", 0)
        duplicates = c.get("duplicates", 0)

        def line(label: str, value: int | str, note: str = "") -> str:
            return f"  {label:<24}{value:>8}" + (f"   {note}" if note else "")

        def counted(name: str) -> int | str:
            return c.get(name, 0) if self.counters_known else NOT_AVAILABLE

        how = "stopped (Ctrl-C) after" if self.interrupted else "run finished in"
        unknown = "" if self.counters_known else "(the runner reports its counters only when the job ends)"
        lines = [
            f"realtime-analytics: {how} {self.seconds:.1f} s ({self.mode})",
            "",
            line("records read", counted("records_read"), unknown),
            line("valid events", counted("events_valid")),
            line("duplicates dropped", counted("duplicates")),
            line("too late", counted("too_late"), "(in the dead letter as too_late)"),
        ]
        if self.remote_dead_letters:
            codes = Counter({k[len("dead_letters_") :]: v for k, v in c.items() if k.startswith("dead_letters_") and v})
            codes = Counter({code: n for code, n in codes.items() if not code.startswith("stage_")})
            dead = self.dead_letters if self.counters_known else NOT_AVAILABLE
            lines.append(line("dead letters", dead, "(counted by the pipeline; not read back)"))
        else:
            codes = Counter(row["error_code"] for row in self.dead_letter_rows)
            lines.append(line("dead letters", self.dead_letters))
        for code, count in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0])):
            lines.append(f"      {code:<24}{count:>4}")
        if self.remote_aggregates:
            lines += [
                line("aggregated events", NOT_AVAILABLE, "(the aggregates went where the summary cannot read)"),
                line("windows", NOT_AVAILABLE),
                line("aggregate rows", counted("aggregate_rows"), "(counted by the pipeline; not read back)"),
                f"  {'conservation':<24}not checked here: results went to {', '.join(self.remote_sinks)} "
                "(count them there: read = final-pane event_count + dead letters + duplicates)",
            ]
        else:
            each_once = (
                f", each event once: sliding windows hold it {self.windows_per_event} times"
                if self.windows_per_event > 1
                else ""
            )
            pane_note = ", ".join(f"{t} {panes[t]}" for t in ("EARLY", "ON_TIME", "LATE") if panes[t])
            lines += [
                line("aggregated events", self.aggregated_events, f"(final pane of each window and group{each_once})"),
                line("windows", len(windows)),
                line("aggregate rows", len(self.aggregate_rows), pane_note),
                f"  {'conservation':<24}{read} read = {self.aggregated_events} aggregated + "
                f"{self.dead_letters} dead letters + {duplicates} duplicates: "
                + (
                    "not checked (the runner gave no counters)"
                    if not self.counters_known
                    else "not checked (stopped: records in flight are in no file yet)"
                    if self.interrupted
                    else "ok"
                    if self.conserved()
                    else "MISMATCH"
                ),
            ]
            if self.remote_dead_letters:
                lines[-1] = (
                    f"  {'conservation':<24}not checked here: dead letters went to {', '.join(self.remote_sinks)} "
                    "(count them there: read = final-pane event_count + dead letters + duplicates)"
                )
            keys: Counter[str] = Counter()
            for row in finals.values():
                keys[f"{row['event_type']} / {row['key']}"] += row["event_count"]
            if keys:
                lines += ["", "  top event_type / key by events:"]
                for name, count in keys.most_common(5):
                    lines.append(f"      {name:<40}{count // self.windows_per_event:>6}")
        lines += ["", "  files:"]
        for path in self.aggregate_files + self.dead_letter_files + self.remote_sinks:
            lines.append(f"      {path}")
        return "\n".join(lines)
