"""Which engine runs a job, and the Beam options and runner object it needs: decided from the launch spec.

Beam's default ``DirectRunner`` first tries Prism, which it downloads from the internet; offline that costs a
failed download (or a hang on networks that drop packets). For the direct runner we pick the local engine
ourselves: the FnApiRunner for batch (fast, supports ``--direct_num_workers``), the BundleBasedDirectRunner for
streaming (TestStream, processing-time triggers), and the cached Prism when the pipeline has cross-language (Java)
transforms, which neither of the two runs. Every other runner is Beam's, with what it needs locally filled in
(the cached Prism binary, the cached Flink job server, Python workers without Docker).

``RunnerSpec`` is decided once (``pipelines/spec.py``); ``beam_options`` turns it into a fresh ``PipelineOptions``
for Beam: the user's options are never written to.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineRunner
from apache_beam.runners.worker import statesampler

_LOG = logging.getLogger(__name__)

DIRECT_NAMES = (None, "", "DirectRunner", "SwitchingDirectRunner")
# The engines the direct runner stands for here.
FN_API_RUNNER = "FnApiRunner"  # bounded input, every core for large input
BUNDLE_BASED_DIRECT_RUNNER = "BundleBasedDirectRunner"  # streaming: TestStream, processing-time triggers
PRISM = "PrismRunner"
FLINK = "FlinkRunner"


def is_direct(runner: str | None) -> bool:
    """``--runner`` names Beam's direct runner (or is not given)."""
    return runner in DIRECT_NAMES


def is_flink(runner: str | None) -> bool:
    """``--runner`` names Beam's FlinkRunner, spelled any way Beam accepts (FlinkRunner, flink, the class path)."""
    return (runner or "").rsplit(".", 1)[-1].lower() in ("flink", "flinkrunner")


def is_prism(runner: str | None) -> bool:
    return (runner or "").rsplit(".", 1)[-1] == PRISM


# Engines that retry a failed bundle with the same input and its state rolled back (the direct runner, Dataflow), or
# fail the job instead of retrying (Prism): what exactly-once Storage Write appends rely on. Others (Flink restores a
# checkpoint and replays the source, which may batch rows differently) get at-least-once appends.
STABLE_RETRY_ENGINES = (FN_API_RUNNER, BUNDLE_BASED_DIRECT_RUNNER, PRISM, "DataflowRunner", "TestDataflowRunner")

# Engines that can read Pub/Sub from Python: ReadFromPubSub expands to beam:transform:pubsub_read:v1, which only
# Dataflow implements; the direct runner substitutes its own reader. Prism refuses it ("unimplemented features",
# seen), Flink does not know the URN.
PUBSUB_READ_ENGINES = (BUNDLE_BASED_DIRECT_RUNNER, FN_API_RUNNER, "DataflowRunner", "TestDataflowRunner")


def engine_for(runner: str | None, streaming: bool, cross_language: bool) -> str:
    """What runs a job given ``--runner``: the direct runner stands for one of three local engines."""
    if is_direct(runner):
        if cross_language:
            return PRISM  # Beam's direct runners cannot run Java transforms; Prism can, and it is cached
        return BUNDLE_BASED_DIRECT_RUNNER if streaming else FN_API_RUNNER
    if is_flink(runner):
        return FLINK
    if is_prism(runner):
        return PRISM
    return str(runner)


@dataclass(frozen=True)
class RunnerSpec:
    """How the job runs, decided once from the options (``pipelines/spec.py``)."""

    requested: str  # --runner as given ("DirectRunner" when not given)
    engine: str  # what runs the job: FN_API_RUNNER, BUNDLE_BASED_DIRECT_RUNNER, PRISM, FLINK or the runner's name
    streaming: bool
    every_core: bool = False  # direct runner, bounded input: one worker process per core
    # Typed Flink settings (FlinkPipelineOptions under their Python names: ints for milliseconds and counts).
    flink: Mapping[str, int | str] = field(default_factory=dict)
    # What the user gave explicitly for the runner's local pieces (None: filled in from the cache).
    flink_master: str = "[auto]"
    # The job's name (--job_name, or one made unique for a Flink cluster): a job on a cluster is found, and cancelled,
    # by it; Beam's Flink job server leaves the cluster's job running when its own invocation is cancelled.
    job_name: str | None = None
    flink_job_server_jar: str | None = None
    prism_location: str | None = None
    environment_type: str | None = None

    @property
    def retries_with_stable_input(self) -> bool:
        return self.engine in STABLE_RETRY_ENGINES

    @property
    def reads_pubsub(self) -> bool:
        return self.engine in PUBSUB_READ_ENGINES

    @property
    def stands_in(self) -> bool:
        """The direct runner was asked for and Prism runs the job (cross-language transforms)."""
        return is_direct(self.requested) and self.engine == PRISM

    def describe(self) -> str:
        """The runner as the summary names it: ``DirectRunner``, or ``DirectRunner on Prism``."""
        return f"{self.requested} on Prism" if self.stands_in else self.requested


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


def keep_pulling_through_pubsub_outages() -> None:
    """Makes the BundleBasedDirectRunner's Pub/Sub reader ride out an outage of Pub/Sub (idempotent).

    Its reader pulls with a 30 s deadline; when Pub/Sub does not answer, the pull raises, the executor retries the
    bundle 4 times with a traceback each, then fails the whole job: a streaming job would die of a two-minute outage.
    Here a pull that fails on unavailability or a deadline returns no messages instead, after a pause, so the reader
    keeps retrying until Pub/Sub answers again (the CLI's source watch warns meanwhile: pipelines/job.py). Anything
    else (a deleted subscription, no permission) still fails the job.
    """
    from apache_beam.runners.direct import transform_evaluator
    from google.api_core import exceptions

    evaluator = transform_evaluator._PubSubReadEvaluator
    if getattr(evaluator._read_from_pubsub, "_realtime_analytics_fix", False):
        return
    original = evaluator._read_from_pubsub
    transient = (exceptions.ServiceUnavailable, exceptions.DeadlineExceeded, exceptions.RetryError)

    def read_from_pubsub(self, timestamp_attribute):
        try:
            return original(self, timestamp_attribute)
        except transient as exc:
            _LOG.debug("Pub/Sub pull failed, retrying: %s", exc)
            time.sleep(PUBSUB_OUTAGE_PAUSE_S)
            return []

    read_from_pubsub._realtime_analytics_fix = True
    evaluator._read_from_pubsub = read_from_pubsub


PUBSUB_OUTAGE_PAUSE_S = 2.0

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


def uses_every_core(source: str) -> bool:
    """Bounded input on the direct runner: one worker process per core when the input is large (the caller checks
    that --direct_num_workers was not given)."""
    size = bounded_input_bytes(source)
    return size is not None and size >= MULTI_PROCESS_MIN_BYTES and (os.cpu_count() or 1) >= 2


# Prism (Beam's Go portable runner) built from the Go module proxy into .cache/go: Beam's PrismRunner would otherwise
# download a release zip from GitHub, which is not reachable (and CI starts from a fresh clone).
PRISM_VERSION = "v2.77.0"


def prism_binary() -> str:
    """Path of the cached ``prism`` binary; builds it with ``go install ...prism@PRISM_VERSION`` once (idempotent)."""
    import shutil
    import subprocess

    from pipelines.local_run.install_once import install_once
    from pipelines.local_run.jars import CACHE_DIR

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


def beam_options(runner: RunnerSpec, argv: Sequence[str]) -> PipelineOptions:
    """Beam's options for the job: the flags as given, plus what the engine needs (the streaming flag, the cached
    Prism binary or Flink job server, Docker-free workers, typed Flink values). A new object: ``argv``'s own options
    are left as the user gave them."""
    overrides: dict[str, Any] = {}
    if runner.streaming:
        overrides["streaming"] = True  # Beam's I/O checks the flag (Pub/Sub), runners pick their mode by it
    if runner.engine == FN_API_RUNNER and runner.every_core:
        overrides.update(direct_num_workers=0, direct_running_mode="multi_processing")  # Beam: 0 = one per core
    elif runner.engine == PRISM:
        overrides.update(prism_overrides(runner))
    elif runner.engine == FLINK:
        overrides.update(flink_overrides(runner))
    return PipelineOptions(list(argv), **overrides)


def prism_overrides(runner: RunnerSpec) -> dict[str, Any]:
    """``PrismRunner`` (asked for, or standing in for the direct runner): the cached binary unless
    ``--prism_location`` is given, and Python workers in this process (LOOPBACK) unless ``--environment_type`` is."""
    return {
        "runner": PRISM,
        "prism_location": runner.prism_location or prism_binary(),
        "environment_type": runner.environment_type or "LOOPBACK",
    }


# Beam's FlinkRunner, with Beam's Flink job server assembled from Maven Central by pipelines/local_run/jars.py
# (FLINK_JAVA).
EMBEDDED_FLINK = ("[local]", "[auto]")


def flink_overrides(runner: RunnerSpec) -> dict[str, Any]:
    """``--runner=FlinkRunner``: the cached job server jar unless ``--flink_job_server_jar`` is given (so Beam never
    downloads one), and Python workers without Docker: LOOPBACK (in this process) on the embedded Flink
    (``--flink_master=[local]``), a PROCESS environment (``pipelines/local_run/boot.py``, started by the TaskManager)
    on a cluster. An explicit ``--environment_type`` wins. The Flink options (checkpointing, state backend, restarts)
    go to the job server with the types it expects (Beam Java's FlinkPipelineOptions: checkpointing_interval ->
    checkpointingInterval)."""
    from pipelines.local_run.boot import python_boot_command
    from pipelines.local_run.jars import flink_job_server_jar

    overrides: dict[str, Any] = dict(runner.flink)
    overrides["flink_job_server_jar"] = runner.flink_job_server_jar or str(flink_job_server_jar())
    if runner.job_name:
        overrides["job_name"] = runner.job_name
    if not runner.environment_type and runner.flink_master.strip() not in EMBEDDED_FLINK:
        overrides["environment_type"] = "PROCESS"
        overrides["environment_config"] = json.dumps({"command": str(python_boot_command())})
    return overrides


def on_flink_cluster(runner: RunnerSpec) -> bool:
    return runner.engine == FLINK and runner.flink_master.strip() not in EMBEDDED_FLINK


def cancel_on_flink_cluster(runner: RunnerSpec, timeout_s: float = 10.0) -> list[str]:
    """Cancels the job's unfinished runs on the Flink cluster through Flink's REST API (found by job name); returns
    their Flink job ids. Beam's job server cancels only its own invocation, which leaves the cluster's job running."""
    import urllib.request

    if not on_flink_cluster(runner) or not runner.job_name:
        return []
    master = runner.flink_master.strip()
    rest = master if "://" in master else f"http://{master}"
    with urllib.request.urlopen(f"{rest}/jobs/overview", timeout=timeout_s) as answer:
        jobs = json.load(answer).get("jobs", [])
    finished = ("FINISHED", "CANCELED", "FAILED")
    cancelled = []
    for job in jobs:
        if job.get("name") == runner.job_name and job.get("state") not in finished:
            request = urllib.request.Request(f"{rest}/jobs/{job['jid']}?mode=cancel", method="PATCH")
            with urllib.request.urlopen(request, timeout=timeout_s):
                cancelled.append(job["jid"])
    return cancelled


def runner_object(runner: RunnerSpec) -> PipelineRunner | None:
    """The runner object to hand to ``beam.Pipeline``, or None to let Beam resolve ``--runner`` itself."""
    if runner.engine in (FN_API_RUNNER, BUNDLE_BASED_DIRECT_RUNNER):
        return direct_runner(streaming=runner.engine == BUNDLE_BASED_DIRECT_RUNNER)
    if runner.engine == PRISM:
        from apache_beam.runners.portability.prism_runner import PrismRunner

        return PrismRunner()
    return None


def direct_runner(streaming: bool) -> PipelineRunner:
    """The local engine of the direct runner: BundleBasedDirectRunner (streaming, metrics fixed) or FnApiRunner."""
    if streaming:
        from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner

        fix_streaming_direct_runner_metrics()
        keep_pulling_through_pubsub_outages()
        return BundleBasedDirectRunner()
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    return FnApiRunner()


def kafka_expansion_service(runner: RunnerSpec):
    """The expansion service for the Kafka transforms, matching the runner's Java side (pipelines/local_run/jars.py)."""
    from pipelines.local_run import jars

    if runner.engine == FLINK:
        # A runner-native read: Flink runs KafkaIO's UnboundedSource itself and checkpoints its offsets. The SDF read
        # (the default) emits nothing on the Flink runner (apache/beam#20979).
        return jars.kafka_expansion_service(jars.FLINK_JAVA, experiments=("use_deprecated_read",))
    return jars.kafka_expansion_service()
