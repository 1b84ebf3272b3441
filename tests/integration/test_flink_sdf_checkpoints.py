"""Python splittable DoFns that self-checkpoint, on the project's Flink job server (the runner patch of
pipelines/local_run/java/beam-flink-patches).

Beam Java 2.62's Flink runner kept every self-checkpoint residual under a state name of its own and never dropped it
(the TaskManager heap grew until OutOfMemoryError under a PeriodicImpulse: the synthetic:// stream), and it cut a
requested resume delay to whole seconds (a DoFn waiting 0.3 s was resumed at once, over and over). The patch keeps
the residuals in one map state per key and window, removed when their timer fires, and keeps the delay's fraction.

One element split into several restrictions is the case a residual store can get wrong: every chain has the same
key (Flink keys an SDF's residuals by its element), so a store that reuses names per key loses chains (a store with
one name per residual index lost records here). Four chains of one element each emit their range in small chunks,
each chunk only at its due time (0.3 s apart), and defer in between. Every position must arrive exactly once, and
each chain must be resumed about once per chunk, not in a busy loop, both without checkpointing (Beam shuts the
Impulse source down at once and the operator fires timers from its end-of-input loop) and with it (sources stay up,
timers fire from Flink's timer service, and the residuals are in the checkpoints).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.utils.timestamp import Duration

from pipelines.runners import FLINK, RunnerSpec, beam_options

CHAINS = 4
CHUNKS = 6  # per chain
CHUNK = 5  # positions per chunk
STEP_S = 0.3  # between a chain's chunks


class _Chains(RestrictionProvider):
    def initial_restriction(self, element):
        return OffsetRange(0, CHAINS * CHUNKS * CHUNK)

    def split(self, element, restriction):
        size = CHUNKS * CHUNK
        for chain in range(CHAINS):
            yield OffsetRange(chain * size, (chain + 1) * size)

    def create_tracker(self, restriction):
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction):
        return restriction.size()


class _EmitWhenDue(beam.DoFn):
    """Emits the next chunk of its range once it is due, and defers (for less than a second) until the next one.

    Each call appends one line to ``calls_dir/<pid>`` (the workers run on this machine), to count resumptions."""

    def __init__(self, calls_dir: str) -> None:
        self._calls_dir = calls_dir

    def setup(self):
        # The schedule starts once the worker runs (after the job's start-up), so every wait is a real one.
        self._started = time.time() + 1.0

    def process(self, element, tracker=beam.DoFn.RestrictionParam(_Chains())):
        import os

        start = tracker.current_restriction().start
        with open(Path(self._calls_dir) / str(os.getpid()), "a") as calls:
            calls.write(f"{start}\n")
        size = CHUNKS * CHUNK
        chain, done = divmod(start, size)
        due = self._started + chain * STEP_S / CHAINS + (done // CHUNK) * STEP_S
        wait = due - time.time()
        if wait > 0:
            tracker.defer_remainder(Duration.of(wait))
            return
        for position in range(start, min(start + CHUNK, tracker.current_restriction().stop)):
            if not tracker.try_claim(position):
                return
            yield position
        if tracker.current_restriction().stop > start + CHUNK:
            tracker.defer_remainder(Duration.of(max(0.0, due + STEP_S - time.time())))


class _AppendLines(beam.DoFn):
    def __init__(self, out_dir: str) -> None:
        self._out_dir = out_dir

    def start_bundle(self):
        self._lines = []

    def process(self, position):
        self._lines.append(f"{position}\n")

    def finish_bundle(self):
        import os

        if self._lines:
            with open(Path(self._out_dir) / str(os.getpid()), "a") as out:
                out.write("".join(self._lines))


def _lines(directory: Path) -> list[int]:
    return [int(line) for path in directory.iterdir() for line in path.read_text().split()]


@pytest.mark.parametrize("checkpointing", [{}, {"checkpointing_interval": 500}], ids=["plain", "checkpointed"])
def test_every_residual_chain_of_one_element_resumes_on_time_and_loses_nothing(tmp_path, checkpointing):
    out, calls = tmp_path / "out", tmp_path / "calls"
    out.mkdir()
    calls.mkdir()
    runner = RunnerSpec(
        requested=FLINK,
        engine=FLINK,
        streaming=True,
        flink=checkpointing,
        flink_master="[local]",
        job_name=f"sdf-{uuid.uuid4().hex[:8]}",
    )
    pipeline = beam.Pipeline(options=beam_options(runner, ["--runner=FlinkRunner"]))
    _ = (
        pipeline
        | beam.Create(["one element"])
        | "Chains" >> beam.ParDo(_EmitWhenDue(str(calls)))
        | "Append" >> beam.ParDo(_AppendLines(str(out)))
    )
    result = pipeline.run()
    try:
        deadline = time.monotonic() + 300
        expected = CHAINS * CHUNKS * CHUNK
        while len(_lines(out)) < expected and time.monotonic() < deadline:
            time.sleep(1)
        time.sleep(2)  # anything more (a duplicate) would come now
    finally:
        result.cancel()

    assert Counter(_lines(out)) == Counter(range(expected))
    resumptions = Counter(_lines(calls))
    # One call per chunk, plus the first one (before the first chunk was due) and a little slack for a timer that
    # fires a few ms early; the busy loop of whole-second delays made hundreds.
    assert sum(resumptions.values()) <= CHAINS * (CHUNKS + 3), resumptions
