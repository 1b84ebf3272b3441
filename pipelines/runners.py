"""Choosing the runner without surprises.

Beam's default ``DirectRunner`` first tries Prism, which it downloads from the internet; offline that costs a
failed download (or a hang on networks that drop packets). For the direct runner we pick the local engine
ourselves: the FnApiRunner for batch (fast, supports ``--direct_num_workers``) and the BundleBasedDirectRunner
for streaming (TestStream, processing-time triggers). Every other runner is left to Beam.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineRunner
from apache_beam.runners.worker import statesampler

DIRECT_NAMES = (None, "", "DirectRunner", "SwitchingDirectRunner")


def fix_streaming_direct_runner_metrics() -> None:
    """Makes user counters exact on Beam's BundleBasedDirectRunner (Beam 2.77 bug; idempotent).

    Its executor gives every bundle a fresh MetricsContainer and commits that container when the bundle ends,
    but ``StateSampler.scoped_state`` caches one ScopedState per step name and keeps the metrics container of
    the first bundle it saw. Counters incremented in later bundles land in that stale container, which is never
    committed again: a DoFn that counts 20 elements over 10 bundles reports 2. The fix re-binds the cached
    state when a bundle brings its own container. Only the local streaming runner is affected; Flink and
    Dataflow report metrics through the Fn API.
    """
    sampler = statesampler.StateSampler
    if getattr(sampler.scoped_state, "_realtime_analytics_fix", False):
        return
    original = sampler.scoped_state

    def scoped_state(self, name_context, state_name, io_target=None, metrics_container=None):
        state = original(self, name_context, state_name, io_target, metrics_container)
        if metrics_container is None or state.metrics_container is metrics_container:
            return state
        fresh = self._scoped_state(state.counter.name, state.name_context, state.counter, metrics_container)
        self._states_by_name[state.counter.name] = fresh
        return fresh

    scoped_state._realtime_analytics_fix = True
    sampler.scoped_state = scoped_state


def is_direct(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in DIRECT_NAMES


# Runners that retry a failed bundle with the same input and its state rolled back (the direct runner, Dataflow), or
# fail the job instead of retrying (Prism): what exactly-once Storage Write appends rely on. Others (Flink restores a
# checkpoint and replays the source, which may batch rows differently) get at-least-once appends.
STABLE_RETRY_RUNNERS = (*DIRECT_NAMES, "BundleBasedDirectRunner", "PrismRunner", "DataflowRunner", "TestDataflowRunner")


def retries_with_stable_input(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in STABLE_RETRY_RUNNERS


# Runners that can read Pub/Sub from Python: Dataflow and the direct runner with Beam's ReadFromPubSub, Prism and Flink
# with the project's pull source (transforms/io/pubsub_pull.py: a splittable DoFn acknowledging through bundle
# finalization). Others are refused: whether they finalize bundles is unknown.
PUBSUB_READ_RUNNERS = (*DIRECT_NAMES, "BundleBasedDirectRunner", "DataflowRunner", "TestDataflowRunner", "PrismRunner")


def reads_pubsub(options: PipelineOptions) -> bool:
    return options.view_as(StandardOptions).runner in PUBSUB_READ_RUNNERS or is_flink(options)


# Bounded input at least this large runs on every core when --direct_num_workers is not given: starting worker
# processes costs seconds (each imports Beam), which pays off from a few hundred thousand events on
# (docs/benchmarks.md). Synthetic input counts ~150 bytes per event.
MULTI_PROCESS_MIN_BYTES = 64 << 20
_SYNTHETIC_EVENT_BYTES = 150


def bounded_input_bytes(source: str) -> int | None:
    """About how many bytes a bounded local source holds (files: their sizes), or None if unknown."""
    from transforms.io import SYNTHETIC, is_replay, local_file_prefix, scheme_of
    from transforms.io.synthetic import parse_synthetic_uri

    if scheme_of(source) == SYNTHETIC:
        return None if is_replay(source) else parse_synthetic_uri(source).events * _SYNTHETIC_EVENT_BYTES
    path = local_file_prefix(source)
    if path is None:
        return None
    return sum(os.path.getsize(match) for match in glob.glob(path) if os.path.isfile(match))


def use_every_core_for_large_input(options: PipelineOptions, source: str) -> bool:
    """Batch on the direct runner: one worker process per core for large input (the caller checks that
    --direct_num_workers was not given). Returns whether it did."""
    from apache_beam.options.pipeline_options import DirectOptions

    size = bounded_input_bytes(source)
    if size is None or size < MULTI_PROCESS_MIN_BYTES or (os.cpu_count() or 1) < 2:
        return False
    direct = options.view_as(DirectOptions)
    direct.direct_num_workers = 0  # Beam: one per core
    direct.direct_running_mode = "multi_processing"
    return True


def local_runner(options: PipelineOptions, streaming: bool) -> PipelineRunner | None:
    """The runner object to use, or None to let Beam resolve ``--runner`` itself (Prism: cached binary filled in)."""
    if not is_direct(options):
        fill_portable_runner_options(options)
        return None
    if streaming:
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        fix_streaming_direct_runner_metrics()
        return BundleBasedDirectRunner()
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


# Prism (Beam's Go portable runner) built from the Go module proxy into .cache/go: Beam's PrismRunner would otherwise
# download a release zip from GitHub, which is not reachable (and CI starts from a fresh clone).
PRISM_VERSION = "v2.77.0"
PRISM_RUNNERS = ("PrismRunner",)


def prism_binary() -> str:
    """Path of the cached ``prism`` binary; builds it with ``go install ...prism@PRISM_VERSION`` once (idempotent)."""
    import shutil
    import subprocess

    from pipelines.install_once import install_once
    from pipelines.jars import CACHE_DIR

    go_dir = CACHE_DIR / "go"
    binary = go_dir / "path" / "bin" / "prism"

    def install() -> None:
        go = shutil.which("go")
        if go is None:
            raise RuntimeError("'go' is not on PATH: it builds Beam's Prism runner from the Go module proxy")
        env = dict(
            os.environ,
            GOPATH=str(go_dir / "path"),
            GOMODCACHE=str(go_dir / "mod"),
            GOCACHE=str(go_dir / "build"),
            GOTOOLCHAIN="local",
            GOFLAGS="-buildvcs=false",
        )
        module = f"github.com/apache/beam/sdks/v2/go/cmd/prism@{PRISM_VERSION}"
        done = subprocess.run([go, "install", module], env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0 or not binary.exists():
            raise RuntimeError(f"go install {module} failed (exit {done.returncode}): {done.stderr[-2000:]}")

    install_once(
        binary.with_name("prism.version"), PRISM_VERSION, CACHE_DIR / "prism.lock", install, present=binary.exists
    )
    return str(binary)


def fill_portable_runner_options(options: PipelineOptions) -> PipelineOptions:
    """Fills in what a portable runner needs locally and Beam would otherwise download or expect from Docker.

    ``--runner=PrismRunner`` without ``--prism_location``: the cached binary (built on first use), and
    ``--environment_type`` LOOPBACK (Python workers in this process). ``--runner=FlinkRunner``: see
    ``fill_flink_options``. Other runners are left alone. Returns ``options`` (changed in place).
    """
    from apache_beam.options.pipeline_options import PortableOptions, PrismRunnerOptions

    if is_flink(options):
        return fill_flink_options(options)
    if options.view_as(StandardOptions).runner not in PRISM_RUNNERS:
        return options
    prism = options.view_as(PrismRunnerOptions)
    if not prism.prism_location:
        prism.prism_location = prism_binary()
    portable = options.view_as(PortableOptions)
    if not portable.environment_type:
        portable.environment_type = "LOOPBACK"
    return options


# Beam's FlinkRunner, with Beam's Flink job server assembled from Maven Central by pipelines/jars.py (FLINK_JAVA).
EMBEDDED_FLINK = ("[local]", "[auto]")


def is_flink(options: PipelineOptions) -> bool:
    """``--runner`` names Beam's FlinkRunner, spelled any way Beam accepts (FlinkRunner, flink, the class path)."""
    runner = (options.view_as(StandardOptions).runner or "").rsplit(".", 1)[-1].lower()
    return runner in ("flink", "flinkrunner")


class FlinkBundleOptions(PipelineOptions):
    """Beam Java's ``FlinkPipelineOptions.finishBundleBeforeCheckpointing``, which Beam Python does not declare (the job
    server receives declared options only). Set by ``fill_flink_options``, not meant for the command line."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        parser.add_argument("--finish_bundle_before_checkpointing", default=None, help=argparse.SUPPRESS)


def fill_flink_options(options: PipelineOptions) -> PipelineOptions:
    """``--runner=FlinkRunner``: the cached job server jar unless ``--flink_job_server_jar`` is given (so Beam never
    downloads one), and Python workers without Docker: LOOPBACK (in this process) on the embedded Flink
    (``--flink_master=[local]``), a PROCESS environment (``pipelines/boot.py``, started by the TaskManager) on a
    cluster. An explicit ``--environment_type`` wins. The Flink options of ``AnalyticsOptions`` (checkpointing, state
    backend, restarts) get the types the job server expects. Returns ``options`` (changed in place)."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions, PortableOptions

    from pipelines.boot import python_boot_command
    from pipelines.jars import flink_job_server_jar

    flink = options.view_as(FlinkRunnerOptions)
    if not flink.flink_job_server_jar:
        flink.flink_job_server_jar = str(flink_job_server_jar())
    from pipelines.options import AnalyticsOptions, flink_settings

    # Typed for the job server (Beam Java's FlinkPipelineOptions: checkpointing_interval -> checkpointingInterval).
    settings = flink_settings(options)
    for name, value in settings.items():
        setattr(options.view_as(AnalyticsOptions), name, value)
    if "checkpointing_interval" in settings:
        # Every Python source starts from Impulse, whose stage runs one bundle: if a checkpoint starts during it, Beam's
        # Flink runner keeps that bundle's output in the checkpoint and, the stage's input having ended, never emits
        # it, so the source never starts (seen: the Pub/Sub pull source with 1 s checkpoints on the embedded Flink).
        # Finishing bundles before the barrier emits it (and keeps bundle output out of checkpoints altogether).
        options.view_as(FlinkBundleOptions).finish_bundle_before_checkpointing = True
    portable = options.view_as(PortableOptions)
    if not portable.environment_type and flink.flink_master.strip() not in EMBEDDED_FLINK:
        portable.environment_type = "PROCESS"
        portable.environment_config = json.dumps({"command": str(python_boot_command())})
    return options


def kafka_expansion_service(options: PipelineOptions):
    """The expansion service for the Kafka transforms, matching the runner's Java side (see pipelines/jars.py)."""
    from pipelines import jars

    if is_flink(options):
        # A runner-native read: Flink runs KafkaIO's UnboundedSource itself and checkpoints its offsets. The SDF read
        # (the default) emits nothing on the Flink runner (apache/beam#20979).
        return jars.kafka_expansion_service(jars.FLINK_JAVA, experiments=("use_deprecated_read",))
    return jars.kafka_expansion_service()
