"""Apache Flink as a session cluster: one JobManager and one TaskManager process, from the PyPI distribution.

The distribution (services/cache.py ``ensure_flink_distribution``) is Flink 1.16, the version Beam's Flink runner here
is built for (pipelines/local_run/jars.py). Both processes run in the foreground (``jobmanager.sh start-foreground``,
``taskmanager.sh start-foreground``) under one small bash supervisor: one process group to stop, and when either
process dies the supervisor ends the other, so a half-dead cluster never passes for a running one.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Collection
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.local_run.jars import JAVA_17_EXPORTS, JAVA_17_OPENS
from services import cache
from services._process import LOCALHOST, ServiceError, port_open
from services._service import LocalService

if TYPE_CHECKING:
    from pathlib import Path

# The JVM flags for Flink 1.16 on Java 17 (pipelines/local_run/jars.py keeps the one list).
_JAVA_17_OPTS = " ".join(
    [
        "-XX:+IgnoreUnrecognizedVMOptions",
        *(f"--add-exports={export}=ALL-UNNAMED" for export in JAVA_17_EXPORTS),
        *(f"--add-opens={package}=ALL-UNNAMED" for package in JAVA_17_OPENS),
    ]
)

_FLINK_CONF = """\
jobmanager.rpc.address: {host}
jobmanager.rpc.port: {rpc}
jobmanager.bind-host: {host}
jobmanager.memory.process.size: {jobmanager_memory}
taskmanager.host: {host}
taskmanager.bind-host: {host}
taskmanager.memory.process.size: {taskmanager_memory}
taskmanager.numberOfTaskSlots: {slots}
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
env.java.opts: {java_opts}
# Beam's job jar keeps its classloader referenced from SDK harness threads after a job ends; Flink's leak check would
# fail the next job's class loading with "Trying to access closed classloader".
classloader.check-leaked-classloader: false
"""

# Flink's Prometheus reporter (plugins/metrics-prometheus of the distribution) serves /metrics over HTTP. Both processes
# read this file: each takes the first of the two ports that is still free, so one serves the JobManager's metrics and
# the other the TaskManager's (docs/operations.md, "Metrics on Flink").
_PROMETHEUS_REPORTER = """\
metrics.reporter.prom.factory.class: org.apache.flink.metrics.prometheus.PrometheusReporterFactory
metrics.reporter.prom.port: {prometheus_1},{prometheus_2}
"""

# Exits (and takes the other process with it) as soon as either Flink process ends.
_SUPERVISOR = """\
trap 'kill 0' EXIT
"$FLINK_HOME/bin/jobmanager.sh" start-foreground &
"$FLINK_HOME/bin/taskmanager.sh" start-foreground &
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
        slots: int = 2,
        jobmanager_memory: str = "1024m",
        taskmanager_memory: str = "1536m",
    ) -> None:
        super().__init__(ports=ports, work_dir=work_dir, die_with_parent=die_with_parent)
        self.slots = slots
        self.jobmanager_memory = jobmanager_memory
        self.taskmanager_memory = taskmanager_memory

    def options(self) -> dict[str, Any]:
        return {
            "slots": self.slots,
            "jobmanager_memory": self.jobmanager_memory,
            "taskmanager_memory": self.taskmanager_memory,
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
        (conf / "flink-conf.yaml").write_text(
            _FLINK_CONF.format(
                host=LOCALHOST,
                rpc=self._ports["rpc"],
                rest=self._ports["rest"],
                work=self.work_dir,
                slots=self.slots,
                jobmanager_memory=self.jobmanager_memory,
                taskmanager_memory=self.taskmanager_memory,
                java_opts=_JAVA_17_OPTS,
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
        if overview.get("taskmanagers", 0) < 1:
            raise RuntimeError("no TaskManager registered yet")
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
