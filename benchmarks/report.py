"""The benchmark's outputs: a text table, the results section of docs/benchmarks.md, and a plot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

START = "<!-- bench:results:start (written by `make bench`; edit outside these markers) -->"
END = "<!-- bench:results:end -->"
_MB = 1 << 20
# Variants that read an input of their own (a Kafka topic, a replayed stream): not plotted against the input size,
# and their ratio to the plain loop is their own row's business.
_OWN_INPUT = ("flink", "direct_replay")


@dataclass(frozen=True)
class Row:
    size: int
    label: str
    events_per_s: float | None
    ratio: float | None  # to the plain loop of the same run and size
    peak_rss_mb: float | None
    cpu_s: float | None
    note: str
    plotted: bool = True  # against input size (not the Flink row: its input is its own)


def rows(sizes: list[int], variants: list[Any], cells: dict, checked: tuple[str, ...]) -> list[Row]:
    out = []
    for size in sizes:
        plain = cells.get((size, "plain"))
        baseline = plain.events_per_s if plain else None
        expected = plain.runs[0]["counters"] if plain and plain.runs else None
        for variant in variants:
            cell = cells.get((size, variant.name))
            if cell is None:  # measured at another size only
                continue
            if cell.failure is not None and not cell.runs:
                out.append(Row(size, variant.label, None, None, None, None, f"not measured: {cell.failure}"))
                continue
            rate = cell.events_per_s
            notes = []
            if expected is not None and variant.name in ("beam1", "beam2"):
                differs = [
                    name
                    for run in cell.runs
                    for name in checked
                    if name in run["counters"] and run["counters"][name] != expected[name]
                ]
                notes.append(f"COUNTS DIFFER from the plain loop: {sorted(set(differs))}" if differs else "same counts")
            if variant.name == "direct_replay" and cell.runs:
                counters = cell.runs[0]["counters"]
                notes.append("conserved" if counters.get("conserved") else "CONSERVATION MISMATCH")
            if variant.name == "beam1_nodedup":
                notes.append("not the job (no dedup): what the rest of it needs in memory")
            if variant.name == "parse_validate":
                share = cell.median("fast_path_share")
                notes.append(f"{share:.1%} of records on the fast path")
            flink = cell.runs[0].get("flink") if cell.runs else None
            if flink:
                notes.append(flink["summary"])
            rss = cell.median("peak_rss")
            out.append(
                Row(
                    size,
                    variant.label,
                    rate,
                    rate / baseline if rate and baseline and variant.name not in _OWN_INPUT else None,
                    rss / _MB if rss else None,
                    cell.median("cpu_seconds"),
                    "; ".join(notes),
                    plotted=variant.name not in _OWN_INPUT,
                )
            )
    return out


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def _cells(row: Row) -> list[str]:
    return [
        f"{row.size:,}",
        row.label,
        _fmt(row.events_per_s, ",.0f"),
        _fmt(row.ratio, ".0%"),
        _fmt(row.peak_rss_mb, ",.0f"),
        _fmt(row.cpu_s, ".1f"),
        row.note,
    ]


HEADER = ["events", "variant", "events/s", "× plain loop", "peak RSS MB", "CPU s", "notes"]


def table(result: list[Row]) -> str:
    lines = [HEADER] + [_cells(row) for row in result]
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER) - 1)]
    return "\n".join(
        "  ".join(
            cell.rjust(w) if i in (0, 2, 3, 4, 5) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line[:-1], widths, strict=True))
        )  # fmt: skip
        + "  "
        + line[-1]
        for line in lines
    )


def markdown(result: list[Row], meta: dict[str, Any]) -> str:
    lines = [
        f"Measured {meta['started']} on {meta['machine']}; median of {meta['repeat']} run(s) per cell, each in its "
        "own process. Load average (1/5/15 min) before and after each size, as other jobs shared the machine:",
        "",
    ]
    for size, before, after in meta["loads"]:
        lines.append(
            f"- {size:,} events: {' / '.join(f'{x:.1f}' for x in before)} → {' / '.join(f'{x:.1f}' for x in after)}"
        )
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in result]
    lines += ["", "![throughput and peak memory against input size](benchmarks.png)"]
    return "\n".join(lines)


def write_markdown(path: Path, result: list[Row], meta: dict[str, Any]) -> None:
    """Rewrites the results section of ``path`` (between the markers), or appends one."""
    block = f"{START}\n{markdown(result, meta)}\n{END}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if START in text and END in text:
        head, rest = text.split(START, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Results\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def plot(path: Path, result: list[Row]) -> None:
    """Events/s and peak RSS against input size, one line per variant (log-scaled sizes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (speed, memory) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label in dict.fromkeys(row.label for row in result):
        points = [row for row in result if row.label == label and row.events_per_s and row.plotted]
        if not points:
            continue
        sizes = [row.size for row in points]
        speed.plot(sizes, [row.events_per_s for row in points], marker="o", label=label)
        if any(row.peak_rss_mb for row in points):
            memory.plot(sizes, [row.peak_rss_mb or 0 for row in points], marker="o", label=label)
    for axes, title, unit in ((speed, "throughput", "events/s"), (memory, "peak memory (RSS)", "MB")):
        axes.set_xscale("log")
        axes.set_xlabel("input events")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.set_ylim(bottom=0)
        axes.grid(True, alpha=0.3)
    speed.legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
