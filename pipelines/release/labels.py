"""The transform labels Dataflow sees, and the golden list that keeps them stable.

A Dataflow ``--update`` matches the running job's transforms to the new job's by full label; a renamed
or moved transform breaks the update unless ``--transform_name_mapping`` maps it (docs/updating-jobs.md). The
labels come from a Dataflow dry run of ``build_pipeline`` (offline, no credentials: ``--dry_run=True`` returns
before any API call), so they are exactly the names the service compares, Beam-internal ones included.

    python -m pipelines.release.labels              # print the golden variants' labels (what the golden file holds)
    python -m pipelines.release.labels --check      # exit 1 with a diff if they differ from the golden file
    python -m pipelines.release.labels --update     # rewrite tests/golden/transform_labels.txt (a deliberate change)
    python -m pipelines.release.labels --streaming --source=synthetic://?rate=10   # labels of any other options set
"""

from __future__ import annotations

import argparse
import difflib
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from apache_beam.portability.api import beam_runner_api_pb2

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "transform_labels.txt"

# Options that make DataflowRunner translate the pipeline and return before any API call. Names must be valid:
# an invalid project id fails validation, an invalid bucket name makes Beam try to create a bucket (minutes).
DATAFLOW_DRY_RUN = (
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=realtime-analytics",
    "--region=us-central1",
    "--temp_location=gs://realtime-analytics-dry-run/tmp",
)

# The production shapes of the job. ``{inputs}`` is a local directory holding one empty events.jsonl: the JSON
# lines source checks at construction time that its glob matches a file (for gs:// that is a GCS call).
VARIANTS: dict[str, tuple[str, ...]] = {
    "batch": ("--source={inputs}/*.jsonl",),
    "streaming": (
        "--streaming",
        "--source=pubsub://projects/realtime-analytics/subscriptions/events",
        "--dead_letter_sink=pubsub://projects/realtime-analytics/topics/dead-letters",
    ),
}

HEADER = (
    "# Transform labels of the Dataflow job (python -m pipelines.release.labels), one '<variant>: <label>' per line.\n"
    "# A change here breaks `--update` of a running job unless mapped: read docs/updating-jobs.md, then run\n"
    "# `python -m pipelines.release.labels --update` and commit this file with the change.\n"
)


def dataflow_pipeline_proto(argv: Sequence[str]) -> beam_runner_api_pb2.Pipeline:
    """The pipeline proto DataflowRunner would submit for ``argv`` (launched like the flex template), offline."""
    from pipelines.flex_template import run

    result = run([*DATAFLOW_DRY_RUN, *argv])
    return result.job.proto_pipeline


def proto_labels(proto: beam_runner_api_pb2.Pipeline) -> list[str]:
    """Every transform's full label, sorted (the unnamed root transform left out)."""
    return sorted({t.unique_name for tid, t in proto.components.transforms.items() if t.unique_name != tid})


def transform_labels(argv: Sequence[str]) -> list[str]:
    return proto_labels(dataflow_pipeline_proto(argv))


def golden_lines() -> list[str]:
    """``<variant>: <label>`` for every golden variant, sorted."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="labels-") as inputs:
        (Path(inputs) / "events.jsonl").write_bytes(b"")
        for variant, args in VARIANTS.items():
            argv = [a.format(inputs=inputs) for a in args]
            lines.extend(f"{variant}: {label}" for label in transform_labels(argv))
    return sorted(lines)


def render(lines: Sequence[str]) -> str:
    return HEADER + "".join(f"{line}\n" for line in lines)


def read_golden(path: Path | None = None) -> list[str]:
    path = GOLDEN if path is None else path
    if not path.exists():
        return []
    return [line for line in path.read_text().splitlines() if line and not line.startswith("#")]


def diff(expected: Sequence[str], actual: Sequence[str]) -> str:
    return "".join(
        difflib.unified_diff(
            [f"{line}\n" for line in expected],
            [f"{line}\n" for line in actual],
            fromfile=f"{GOLDEN.relative_to(ROOT)} (committed)",
            tofile="build_pipeline (now)",
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.release.labels",
        description="Transform labels of the Dataflow job. Other arguments are pipeline options: with them, print "
        "the labels of that options set instead of the golden variants.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 with a diff if the golden file is out of date")
    mode.add_argument("--update", action="store_true", help="rewrite the golden file from the current graph")
    args, pipeline_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    if pipeline_args:
        if args.check or args.update:
            parser.error("--check/--update work on the golden variants; give no pipeline options with them")
        print("\n".join(transform_labels(pipeline_args)))
        return 0

    actual = golden_lines()
    if args.update:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(render(actual))
        print(f"wrote {len(actual)} labels to {GOLDEN.relative_to(ROOT)}")
        return 0
    if args.check:
        expected = read_golden()
        if expected != actual:
            print(diff(expected, actual), end="")
            print(
                "transform labels changed: a running Dataflow job cannot be updated to this graph without "
                "--transform_name_mapping (docs/updating-jobs.md). If the change is deliberate: "
                "python -m pipelines.release.labels --update",
                file=sys.stderr,
            )
            return 1
        print(f"{len(actual)} labels match {GOLDEN.relative_to(ROOT)}")
        return 0
    print("\n".join(actual))
    return 0


if __name__ == "__main__":
    sys.exit(main())
