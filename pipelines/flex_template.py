"""Flex template launcher: resolve the options, build the one graph (``build_pipeline``), submit, return.

The flex template image runs ``templates/launch.py`` (``FLEX_TEMPLATE_PYTHON_PY_FILE``), which calls ``main`` here
with the template parameters and Dataflow's own options (``--runner``, ``--project``, ``--region``,
``--temp_location``, ``--sdk_container_image``, ``--update``, ...) as ``--name=value`` arguments.

Differences from the CLI (``pipelines.streaming_analytics``), all about launching, none about the graph:
- the job is submitted and the launcher returns; it never waits (a streaming job never finishes, and the
  launcher VM would time out);
- no summary, no clearing of local outputs, no start-up check of the source and sinks (the launcher VM may not
  reach what the workers reach; Dataflow checks Pub/Sub and BigQuery itself when the job starts);
- ``mode=replay`` sources (and so the default embedded demo) are refused: a replay is a ``TestStream`` on a
  simulated clock, which only the direct runner executes;
- ``--runner`` defaults to ``DataflowRunner`` (the CLI's default is the direct runner);
- unknown flags are logged, not fatal: the launcher may pass Dataflow service options this Beam version does not
  declare, and Beam ignores those anyway.

    python -m pipelines.flex_template --runner=DataflowRunner --project=P --region=R \
        --temp_location=gs://B/tmp --source=pubsub://projects/P/subscriptions/S ...
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from apache_beam.runners.runner import PipelineResult

from pipelines.graph import build_pipeline, new_pipeline
from pipelines.options import ConfigError, known_flags
from pipelines.spec import LaunchSpec, resolve

_LOG = logging.getLogger(__name__)


def launch_spec(argv: Sequence[str]) -> LaunchSpec:
    """The launch spec (raises ConfigError naming the first bad option); unknown flags are logged, not fatal."""
    known = known_flags()
    unknown = sorted({a.split("=", 1)[0] for a in argv if a.startswith("--")} - known)
    if unknown:
        _LOG.warning("flags no options class declares (ignored by Beam): %s", ", ".join(unknown))
    return resolve(argv)  # also refuses replay sources on runners other than the direct runner


def run(argv: Sequence[str]) -> PipelineResult:
    """Builds the pipeline with ``build_pipeline`` and submits it; returns without waiting for the job."""
    spec = launch_spec(argv)
    pipeline = new_pipeline(spec)
    build_pipeline(pipeline, spec)
    return pipeline.run()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not any(a == "--runner" or a.startswith("--runner=") for a in argv):
        argv.insert(0, "--runner=DataflowRunner")  # a template launches Dataflow jobs, never a local run
    try:
        result = run(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    job = getattr(result, "job_id", None)
    _LOG.info("submitted: %s", job() if callable(job) else result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
