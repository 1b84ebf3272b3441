"""Ctrl-C on a running job, as a user presses it: the job is cancelled, the summary so far is printed, exit code 130,
no traceback. Here on the direct runner; on Prism and on a Flink cluster in tests/integration/test_ctrl_c.py.

Also the watch on a streaming job's source: a source that stops answering gets a warning at a bounded interval.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pipelines import job
from pipelines.spec import resolve

ROOT = Path(__file__).resolve().parents[2]


def interrupt_cli(
    argv: Sequence[str], ready: Callable[[], bool], cwd: Path, timeout_s: float = 300, env: dict | None = None
) -> tuple[int, str, str]:
    """Runs the CLI, presses Ctrl-C (SIGINT) once ``ready()``; returns (exit code, stdout, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.streaming_analytics", *argv],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A process started from a non-interactive shell may inherit SIGINT ignored; a terminal's Ctrl-C is not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + timeout_s
    try:
        while not ready() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert process.poll() is None, "the job ended before Ctrl-C: " + process.stderr.read()[-3000:]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return process.returncode, out, err


def files_with_rows(prefix: Path) -> Callable[[], bool]:
    return lambda: any(os.path.getsize(path) > 0 for path in glob.glob(f"{prefix}-*.jsonl"))


def test_ctrl_c_on_a_streaming_run_prints_the_summary_so_far(tmp_path):
    argv = [f"--sink={tmp_path / 'agg'}", f"--dead_letter_sink={tmp_path / 'dlq'}"]  # the demo: a 40-minute replay
    code, out, err = interrupt_cli(argv, files_with_rows(tmp_path / "agg"), tmp_path)
    assert code == 130, err[-3000:]
    lines = out.splitlines()
    assert (
        lines[0].startswith("realtime-analytics: stopped (Ctrl-C) after ") and "(DirectRunner, streaming)" in lines[0]
    )
    read = int(next(line for line in lines if "records read" in line).split()[-1])
    assert 0 < read < 1200  # the counts so far, not the whole demo
    assert "not checked (stopped" in next(line for line in lines if "conservation" in line)
    assert "Traceback" not in err and "CANCELLED" not in err, err[-3000:]


def test_the_watch_warns_at_a_bounded_interval_while_the_source_does_not_answer(caplog):
    spec = resolve(["--source=kafka://127.0.0.1:1/events", "--runner=PrismRunner", "--sink=/nonexistent-dir/agg"])
    watch = job.SourceWatch(spec, interval_s=0.5)
    caplog.set_level(logging.WARNING, logger=job.__name__)
    deadline = time.monotonic() + 3.2
    while time.monotonic() < deadline:
        watch.tick()
        time.sleep(0.05)
    warnings = [r.getMessage() for r in caplog.records if r.name == job.__name__]
    assert 3 <= len(warnings) <= 7, warnings  # about one per interval, never more
    assert warnings[0].startswith("source kafka://127.0.0.1:1/events has not answered for ")
    assert "no Kafka broker answered" in warnings[0] and "keeps retrying" in warnings[0]
