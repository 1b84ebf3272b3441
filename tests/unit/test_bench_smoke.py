"""`make bench` end to end on a tiny input: it measures, cross-checks counts, writes the doc section and the plot.

Timings are never asserted (benchmarks measure, tests check behaviour); this only checks the harness works.
"""

from __future__ import annotations

from benchmarks import __main__ as bench
from benchmarks.report import END, START


def test_harness_runs_end_to_end_on_a_tiny_input(tmp_path, monkeypatch):
    broken = bench.Variant("broken", "a variant that fails", ("beam", "--workers", "9"))
    monkeypatch.setitem(bench.VARIANTS, "broken", broken)
    out, plot = tmp_path / "benchmarks.md", tmp_path / "benchmarks.png"
    out.write_text(f"# Benchmarks\n\nhand-written text\n\n{START}\nold results\n{END}\n\nmore text\n")
    argv = ["--sizes", "500", "--repeat", "1", "--variants", "plain,parse_validate,beam1,broken"]
    argv += ["--out", str(out), "--plot", str(plot), "--cache", str(tmp_path / "cache")]

    assert bench.main(argv) == 0

    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nhand-written text\n\n") and text.endswith(f"{END}\n\nmore text\n")
    assert "old results" not in text
    rows = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| 500 |")}
    assert set(rows) == {v.label for v in (*(bench.VARIANTS[n] for n in ("plain", "parse_validate", "beam1")), broken)}
    assert "same counts" in rows[bench.VARIANTS["beam1"].label]  # Beam counted exactly what the plain loop did
    assert "| 100% |" in rows[bench.VARIANTS["plain"].label]
    assert "not measured: exit 2" in rows[broken.label]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "cache" / "events-500.jsonl").exists()
