"""Apache Flink as a session cluster: one JobManager and one or more TaskManager processes, from the PyPI distribution.

The distribution (services/cache.py ``ensure_flink_distribution``) is Flink 1.19, the version Beam's Flink runner here
is built for (pipelines/local_run/jars.py). Every process runs in the foreground (``jobmanager.sh start-foreground``,
``taskmanager.sh start-foreground``) under one small bash supervisor: one process group to stop, and when any process
dies the supervisor ends the others, so a half-dead cluster never passes for a running one.

The TaskManagers' memory is sized on purpose (``TaskManagerMemory``; the reasoning is in docs/runners-flink.md).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import yaml

from pipelines.local_run.jars import JAVA_17_EXPORTS, JAVA_17_OPENS
from services import cache
from services._process import LOCALHOST, ServiceError, port_open
from services._service import LocalService

if TYPE_CHECKING:
    from pathlib import Path


def _java_17_opts() -> str:
    """The JVM flags Flink needs on Java 17: the list the distribution's own default configuration carries
    (``env.java.opts.all``), or the project's list (pipelines/local_run/jars.py) if a distribution ships none."""
    try:
        shipped = yaml.safe_load((cache.FLINK_HOME / "conf" / "config.yaml").read_text())["env"]["java"]["opts"]["all"]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        shipped = " ".join(
            [
                *(f"--add-exports={export}=ALL-UNNAMED" for export in JAVA_17_EXPORTS),
                *(f"--add-opens={package}=ALL-UNNAMED" for package in JAVA_17_OPENS),
            ]
        )
    return f"-XX:+IgnoreUnrecognizedVMOptions {shipped}"


@dataclass(frozen=True)
class TaskManagerMemory:
    """One TaskManager's memory, component by component in Flink's memory model (sizes as Flink writes them, e.g.
    ``"256m"``). The task heap is not given: it is what the process size leaves. docs/runners-flink.md explains the
    numbers; the defaults are what a catch-up of 1M records with max-size (1 MiB) ones needs on this project's job."""

    process: str = "2560m"
    managed: str = "256m"  # RocksDB's block cache and write buffers (--state_backend=rocksdb); nothing else uses it
    network: str = "128m"  # Flink's shuffle buffers between operators and TaskManagers
    task_off_heap: str = "256m"  # direct memory of the job's own code: Kafka consumer reads, Beam's gRPC data plane
    framework_off_heap: str = "128m"
    metaspace: str = "256m"
    overhead: str = "256m"  # thread stacks, code cache, GC structures, RocksDB's own native allocations

    def settings(self) -> dict[str, str]:
        return {
            "taskmanager.memory.process.size": self.process,
            "taskmanager.memory.managed.size": self.managed,
            "taskmanager.memory.network.min": self.network,
            "taskmanager.memory.network.max": self.network,
            "taskmanager.memory.task.off-heap.size": self.task_off_heap,
            "taskmanager.memory.framework.off-heap.size": self.framework_off_heap,
            "taskmanager.memory.jvm-metaspace.size": self.metaspace,
            "taskmanager.memory.jvm-overhead.min": self.overhead,
            "taskmanager.memory.jvm-overhead.max": self.overhead,
        }


# Flink 1.19 reads conf/config.yaml (standard YAML; flat keys as here are valid in it).
_FLINK_CONF = """\
jobmanager.rpc.address: {host}
jobmanager.rpc.port: {rpc}
jobmanager.bind-host: {host}
jobmanager.memory.process.size: {jobmanager_memory}
taskmanager.host: {host}
taskmanager.bind-host: {host}
taskmanager.numberOfTaskSlots: {slots}
{taskmanager_memory}
parallelism.default: 1
jobmanager.execution.failover-strategy: region
rest.address: {host}
rest.bind-address: {host}
rest.port: {rest}
io.tmp.dirs: {work}/tmp
blob.storage.directory: {work}/blobs
web.tmpdir: {work}/web
state.checkpoints.dir: file://{work}/checkpoints
state.savepoints.dir: file://{work}/savepoints
env.java.opts.all: {java_opts}
# Beam's job jar keeps its classloader referenced from SDK harness threads after a job ends; Flink's leak check would
# fail the next job's class loading with "Trying to access closed classloader".
classloader.check-leaked-classloader: false
"""

# Flink's Prometheus reporter (plugins/metrics-prometheus of the distribution) serves /metrics over HTTP. Every process
# reads this file: each takes the first of the two ports that is still free, so one serves the JobManager's metrics and
# the other the (first) TaskManager's; a second TaskManager finds none free and reports no metrics (docs/operations.md,
# "Metrics on Flink").
_PROMETHEUS_REPORTER = """\
metrics.reporter.prom.factory.class: org.apache.flink.metrics.prometheus.PrometheusReporterFactory
metrics.reporter.prom.port: {prometheus_1},{prometheus_2}
"""

# Exits (and takes the others with it) as soon as any Flink process ends. taskmanager.sh numbers each TaskManager's
# log file (…-taskexecutor-0-…, -1-, ...).
_SUPERVISOR = """\
trap 'kill 0' EXIT
"$FLINK_HOME/bin/jobmanager.sh" start-foreground &
for _ in $(seq "$TASKMANAGERS"); do "$FLINK_HOME/bin/taskmanager.sh" start-foreground & done
wait -n
"""


class FlinkCluster(LocalService):
    """A Flink session cluster on 127.0.0.1; ``flink_master`` is the value for Beam's ``--flink_master``."""

    name: ClassVar[str] = "flink"
    # prometheus_1/_2: the metrics reporter's two ports (see _PROMETHEUS_REPORTER).
    port_names: ClassVar[tuple[str, ...]] = ("rest", "rpc", "prometheus_1", "prometheus_2")
    fixed_ports: ClassVar[dict[str, int]] = {"rest": 18081, "rpc": 16123, "prometheus_1": 19249, "prometheus_2": 19250}
    startup_timeout: ClassVar[float] = 120.0
    stop_grace: ClassVar[float] = 20.0

    def __init__(
        self,
        *,
        ports: dict[str, int] | None = None,
        work_dir: Path | None = None,
        die_with_parent: bool = True,
        taskmanagers: int = 1,
        slots: int = 2,
        jobmanager_memory: str = "1024m",
        taskmanager_memory: dict[str, str] | TaskManagerMemory | None = None,
    ) -> None:
        super().__init__(ports=ports, work_dir=work_dir, die_with_parent=die_with_parent)
        if taskmanagers < 1 or slots < 1:
            raise ValueError(f"a cluster needs at least one TaskManager and one slot, got {taskmanagers}, {slots}")
        self.taskmanagers = taskmanagers
        self.slots = slots
        self.jobmanager_memory = jobmanager_memory
        if isinstance(taskmanager_memory, dict):  # from the state file
            taskmanager_memory = TaskManagerMemory(**taskmanager_memory)
        self.taskmanager_memory = taskmanager_memory or TaskManagerMemory()

    def options(self) -> dict[str, Any]:
        return {
            "taskmanagers": self.taskmanagers,
            "slots": self.slots,
            "jobmanager_memory": self.jobmanager_memory,
            "taskmanager_memory": asdict(self.taskmanager_memory),
        }

    def install(self) -> None:
        cache.ensure_flink_distribution()

    @property
    def flink_master(self) -> str:
        return f"{LOCALHOST}:{self._ports['rest']}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.flink_master}"

    def prepare(self) -> None:
        conf = self.work_dir / "conf"
        conf.mkdir(parents=True, exist_ok=True)
        for name in ("tmp", "blobs", "web", "log"):
            (self.work_dir / name).mkdir(exist_ok=True)
        memory = "\n".join(f"{key}: {value}" for key, value in self.taskmanager_memory.settings().items())
        (conf / "config.yaml").write_text(
            _FLINK_CONF.format(
                host=LOCALHOST,
                rpc=self._ports["rpc"],
                rest=self._ports["rest"],
                work=self.work_dir,
                slots=self.slots,
                jobmanager_memory=self.jobmanager_memory,
                taskmanager_memory=memory,
                java_opts=_java_17_opts(),
            )
            + _PROMETHEUS_REPORTER.format(**self._ports)
        )
        # The foreground scripts log through log4j-console.properties: to stdout, i.e. this service's log file.
        shutil.copy(cache.FLINK_HOME / "conf" / "log4j-console.properties", conf)

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            FLINK_HOME=str(cache.FLINK_HOME),
            FLINK_CONF_DIR=str(self.work_dir / "conf"),
            FLINK_LOG_DIR=str(self.work_dir / "log"),
            # The scripts keep pid files (default /tmp): a private dir keeps clusters apart.
            FLINK_PID_DIR=str(self.work_dir),
            TASKMANAGERS=str(self.taskmanagers),
        )
        return env

    def command(self) -> list[str]:
        return ["bash", "-c", _SUPERVISOR]

    def _get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(f"{self.rest_url}{path}", timeout=timeout) as response:
            return json.loads(response.read())

    def overview(self) -> dict[str, Any]:
        """The cluster's REST ``/overview``: task managers, slots, jobs, version."""
        return self._get("/overview")

    def probe(self) -> None:
        if not port_open(self._ports["rest"]):
            raise ConnectionError(f"nothing listens on {self.rest_url} yet")
        overview = self.overview()
        if overview.get("taskmanagers", 0) < self.taskmanagers:
            raise RuntimeError(f"{overview.get('taskmanagers', 0)} of {self.taskmanagers} TaskManagers registered")
        if overview.get("slots-available", 0) < 1:
            raise RuntimeError(f"no free task slot ({overview.get('slots-total')} in total)")

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster knows: ``{"id": ..., "status": "RUNNING" | "FINISHED" | "CANCELED" | ...}``."""
        return self._get("/jobs").get("jobs", [])

    def job(self, job_id: str) -> dict[str, Any]:
        return self._get(f"/jobs/{job_id}")

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        """The job's checkpoint statistics (REST ``/jobs/<id>/checkpoints``)."""
        return self._get(f"/jobs/{job_id}/checkpoints")

    def completed_checkpoints(self, job_id: str) -> int:
        return int(self.checkpoints(job_id).get("counts", {}).get("completed", 0))

    def checkpoint_config(self, job_id: str) -> dict[str, Any]:
        """How the job checkpoints: ``interval`` (ms), ``mode``, ``state_backend``... (``.../checkpoints/config``)."""
        return self._get(f"/jobs/{job_id}/checkpoints/config")

    def restarts(self, job_id: str) -> int:
        """How often the job restarted after a failure (its ``numRestarts`` metric)."""
        metrics = self._get(f"/jobs/{job_id}/metrics?get=numRestarts")
        return int(metrics[0]["value"]) if metrics else 0

    def cancel_running_jobs(self, keep: Collection[str] = ()) -> list[str]:
        """Cancels every job not finished yet, but those in ``keep``; returns their ids."""
        cancelled = []
        for job in self.jobs():
            if job["id"] not in keep and job.get("status") in ("RUNNING", "CREATED", "RESTARTING", "INITIALIZING"):
                request = urllib.request.Request(f"{self.rest_url}/jobs/{job['id']}?mode=cancel", method="PATCH")
                with urllib.request.urlopen(request, timeout=10):
                    cancelled.append(job["id"])
        return cancelled

    @property
    def metrics_targets(self) -> list[str]:
        """Where Prometheus scrapes the JobManager's and the TaskManager's metrics (``host:port`` each)."""
        names = ("prometheus_1", "prometheus_2")
        if not all(name in self._ports for name in names):
            raise ServiceError(f"[{self.name}] this cluster runs without the Prometheus reporter: restart it")
        return [f"{LOCALHOST}:{self._ports[name]}" for name in names]

    def addresses(self) -> dict[str, str]:
        return {"rest": self.rest_url, "flink_master": self.flink_master, "rpc": f"{LOCALHOST}:{self._ports['rpc']}"}

    def env_vars(self) -> dict[str, str]:
        # This project's own name: `--flink_master=$FLINK_MASTER`.
        return {"FLINK_MASTER": self.flink_master}
