"""Prometheus (Debian's ``prometheus`` package) scraping the Flink session cluster, with the project's alert rules.

The binaries come from Debian: ``ensure_prometheus`` runs ``apt-get install prometheus`` once if ``prometheus`` or
``promtool`` is missing (root, or password-less sudo; the CI machine runs as root). The server runs as a plain process
on 127.0.0.1 with its own config and data dir in the work dir; the rule file is the one under version control
(monitoring/prometheus/alerts.yml), loaded as is, so what the tests see firing is what users deploy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pipelines.local_run.install_once import file_lock
from services import cache
from services._process import LOCALHOST, ServiceError, failure, port_open, run_step
from services._service import LocalService

if TYPE_CHECKING:
    from services.flink import FlinkCluster

MONITORING_DIR = cache.REPO_ROOT / "monitoring"
RULE_FILES = (MONITORING_DIR / "prometheus" / "alerts.yml",)
DEBIAN_PACKAGE = "prometheus"
# Where Debian's package puts the binaries; looked at besides PATH (root's PATH has /usr/bin, cron's may not).
_DEBIAN_BIN = Path("/usr/bin")

_CONFIG = """\
# Written by services/prometheus.py for one local run.
global:
  scrape_interval: {scrape_interval}
  scrape_timeout: {scrape_timeout}
  evaluation_interval: {evaluation_interval}
rule_files:
{rule_files}
scrape_configs:
  # The Flink session cluster's JobManager and TaskManager (Flink's Prometheus reporter, services/flink.py).
  - job_name: flink
    static_configs:
      - targets: {targets}
  - job_name: prometheus
    static_configs:
      - targets: ["{host}:{port}"]
"""


def _find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidate = _DEBIAN_BIN / name
    return str(candidate) if candidate.exists() and os.access(candidate, os.X_OK) else None


def _apt_get_prefix() -> list[str]:
    if os.geteuid() == 0:
        return []
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], capture_output=True, check=False).returncode == 0:
        return [sudo, "-n"]
    raise failure(
        "prometheus",
        "Debian's prometheus package is not installed and installing it needs root: run "
        f"`sudo apt-get install --no-install-recommends {DEBIAN_PACKAGE}` once",
        ["apt-get", "install", DEBIAN_PACKAGE],
        None,
    )


def ensure_prometheus() -> tuple[str, str]:
    """The ``prometheus`` and ``promtool`` binaries, installed from Debian (apt-get) when missing; idempotent."""
    prometheus, promtool = _find_binary("prometheus"), _find_binary("promtool")
    if prometheus and promtool:
        return prometheus, promtool
    if shutil.which("apt-get") is None:
        raise failure(
            "prometheus",
            "prometheus/promtool are not installed and this is not a Debian-like system (no apt-get): install "
            "Prometheus 2.x so that `prometheus` and `promtool` are on PATH",
            None,
            None,
        )
    log = cache.INSTALL_LOG_DIR / "prometheus-apt.log"
    # apt-get waits for dpkg's own lock (DPkg::Lock::Timeout); ours keeps two test workers from racing to install.
    with file_lock(cache.STATE_DIR / "prometheus-install.lock"):
        prometheus, promtool = _find_binary("prometheus"), _find_binary("promtool")
        if prometheus and promtool:
            return prometheus, promtool
        prefix = _apt_get_prefix()
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        install = [
            *prefix,
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=300",
            "install",
            "-y",
            "-q",
            # Without prometheus-node-exporter (recommended), which would be a second system service.
            "--no-install-recommends",
            DEBIAN_PACKAGE,
        ]
        try:
            run_step("prometheus", install, log_path=log, env=env, timeout=900)
        except ServiceError:
            # Missing or stale package lists (a fresh machine): fetch them, then try once more.
            run_step(
                "prometheus",
                [*prefix, "apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-q"],
                log_path=log,
                env=env,
                timeout=900,
            )
            run_step("prometheus", install, log_path=log, env=env, timeout=900)
        prometheus, promtool = _find_binary("prometheus"), _find_binary("promtool")
        if not (prometheus and promtool):
            raise failure("prometheus", "apt-get finished but prometheus/promtool are not there", install, log)
        return prometheus, promtool


def promtool() -> str:
    """The ``promtool`` binary (installed with the server)."""
    return ensure_prometheus()[1]


class PrometheusServer(LocalService):
    """Prometheus on 127.0.0.1 scraping ``scrape_targets`` (the Flink cluster's reporters) with the alert rules.

    ``url`` is its HTTP API and web UI. Without explicit targets it scrapes the Flink cluster ``services up`` starts
    on its fixed ports.
    """

    name: ClassVar[str] = "prometheus"
    port_names: ClassVar[tuple[str, ...]] = ("http",)
    fixed_ports: ClassVar[dict[str, int]] = {"http": 19090}
    startup_timeout: ClassVar[float] = 60.0
    stop_grace: ClassVar[float] = 20.0

    def __init__(
        self,
        *,
        ports: Mapping[str, int] | None = None,
        work_dir: Path | None = None,
        die_with_parent: bool = True,
        scrape_targets: Sequence[str] | None = None,
        scrape_interval: str = "2s",
        evaluation_interval: str = "2s",
    ) -> None:
        super().__init__(ports=ports, work_dir=work_dir, die_with_parent=die_with_parent)
        if scrape_targets is None:
            from services.flink import FlinkCluster

            scrape_targets = FlinkCluster(ports=FlinkCluster.fixed_ports).metrics_targets
        self.scrape_targets = list(scrape_targets)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval

    @classmethod
    def for_cluster(cls, cluster: FlinkCluster, **kwargs: Any) -> PrometheusServer:
        return cls(scrape_targets=cluster.metrics_targets, **kwargs)

    @classmethod
    def options_beside(cls, others: Sequence[LocalService]) -> dict[str, Any]:
        from services.flink import FlinkCluster

        # The cluster `services up` starts or found (its ports may be dynamic), else one recorded earlier.
        cluster = next((s for s in others if isinstance(s, FlinkCluster)), None) or FlinkCluster.find_running()
        return {"scrape_targets": cluster.metrics_targets} if cluster is not None else {}

    def options(self) -> dict[str, Any]:
        return {
            "scrape_targets": self.scrape_targets,
            "scrape_interval": self.scrape_interval,
            "evaluation_interval": self.evaluation_interval,
        }

    def install(self) -> None:
        ensure_prometheus()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self._ports['http']}"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "prometheus.yml"

    def config(self) -> str:
        return _CONFIG.format(
            scrape_interval=self.scrape_interval,
            scrape_timeout=self.scrape_interval,
            evaluation_interval=self.evaluation_interval,
            rule_files="\n".join(f"  - {json.dumps(str(path))}" for path in RULE_FILES),
            targets=json.dumps(self.scrape_targets),
            host=LOCALHOST,
            port=self._ports["http"],
        )

    def prepare(self) -> None:
        (self.work_dir / "data").mkdir(exist_ok=True)
        self.config_path.write_text(self.config())

    def command(self) -> list[str]:
        prometheus, _ = ensure_prometheus()
        return [
            prometheus,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address={LOCALHOST}:{self._ports['http']}",
            "--storage.tsdb.retention.time=2d",
            # POST /-/reload re-reads the rule file after an edit (docs/operations.md).
            "--web.enable-lifecycle",
            # Debian's defaults point here too (/etc/default/prometheus); the web UI's console pages need them.
            "--web.console.templates=/etc/prometheus/consoles",
            "--web.console.libraries=/etc/prometheus/console_libraries",
        ]

    # ---- HTTP API ------------------------------------------------------------------------------

    def api(self, path: str, params: Mapping[str, str] | None = None, timeout: float = 10.0) -> Any:
        """GET ``/api/v1/<path>``; returns ``data`` of a successful answer, raises on an error answer."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}{query}", timeout=timeout) as response:
            body = json.loads(response.read())
        if body.get("status") != "success":
            raise RuntimeError(f"Prometheus {path} answered {body}")
        return body["data"]

    def query(self, promql: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """An instant query: ``[{"metric": {labels}, "value": [t, "v"]}, ...]`` (a vector; scalars become one row)."""
        data = self.api("query", {"query": promql}, timeout=timeout)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets(self) -> list[dict[str, Any]]:
        """The active scrape targets with ``health`` ("up", "down", "unknown") and ``lastError``."""
        return self.api("targets", {"state": "active"})["activeTargets"]

    def alerts(self) -> list[dict[str, Any]]:
        """Alerts pending or firing now: ``labels`` (with ``alertname``), ``state``, ``value``."""
        return self.api("alerts")["alerts"]

    def rule_groups(self) -> list[dict[str, Any]]:
        return self.api("rules")["groups"]

    def probe(self) -> None:
        if not port_open(self._ports["http"]):
            raise ConnectionError(f"nothing listens on {self.url} yet")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=5) as response:
            if response.status != 200:
                raise RuntimeError(f"/-/ready answered {response.status}")
        if not self.rule_groups():
            raise RuntimeError("no alert rules loaded yet")

    def addresses(self) -> dict[str, str]:
        return {"url": self.url, "scrapes": ",".join(self.scrape_targets)}

    def env_vars(self) -> dict[str, str]:
        return {"PROMETHEUS_URL": self.url}
