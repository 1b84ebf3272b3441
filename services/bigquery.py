"""BigQuery emulator: local-bigquery (DuckDB-backed, REST + gRPC Storage API) in its own venv."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from services import cache
from services._process import LOCALHOST, port_open
from services._service import LocalService

if TYPE_CHECKING:
    from pathlib import Path

    from google.cloud import bigquery

DEFAULT_PROJECT = "local-project"


class BigQueryEmulator(LocalService):
    """BigQuery emulator on 127.0.0.1: REST at `endpoint`, Storage Read/Write gRPC at `grpc_host`."""

    name: ClassVar[str] = "bigquery"
    port_names: ClassVar[tuple[str, ...]] = ("rest", "grpc")
    fixed_ports: ClassVar[dict[str, int]] = {"rest": 19050, "grpc": 19060}
    startup_timeout: ClassVar[float] = 60.0
    stop_grace: ClassVar[float] = 10.0

    def __init__(
        self,
        *,
        ports: dict[str, int] | None = None,
        work_dir: Path | None = None,
        die_with_parent: bool = True,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        super().__init__(ports=ports, work_dir=work_dir, die_with_parent=die_with_parent)
        self.project = project

    def options(self) -> dict[str, Any]:
        return {"project": self.project}

    def install(self) -> None:
        cache.ensure_bigquery_venv()

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self._ports['rest']}"

    @property
    def grpc_host(self) -> str:
        return f"{LOCALHOST}:{self._ports['grpc']}"

    def environment(self) -> dict[str, str]:
        return cache.bigquery_env()

    def command(self) -> list[str]:
        return [
            str(cache.BQ_VENV / "bin" / "local-bigquery"),
            "serve",
            "--host",
            LOCALHOST,
            "--port",
            str(self._ports["rest"]),
            "--grpc-port",
            str(self._ports["grpc"]),
            "--project",
            self.project,
            "--data-dir",
            str(self.work_dir / "data"),
        ]

    def client(self, project: str | None = None) -> bigquery.Client:
        """An official google-cloud-bigquery client talking to this emulator, no credentials needed."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=project or self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

    def probe(self) -> None:
        if not port_open(self._ports["rest"]):
            raise ConnectionError(f"nothing listens on {self.endpoint} yet")
        client = self.client()
        try:
            # The first request also opens DuckDB and loads the extensions: a real readiness check.
            list(client.list_datasets(max_results=1, timeout=10))
        finally:
            client.close()
        if not port_open(self._ports["grpc"]):
            raise ConnectionError(f"gRPC (Storage API) port {self.grpc_host} not open yet")

    def addresses(self) -> dict[str, str]:
        return {"rest": self.endpoint, "grpc": self.grpc_host, "project": self.project}

    def env_vars(self) -> dict[str, str]:
        # google-cloud-bigquery reads BIGQUERY_EMULATOR_HOST as a full URL (scheme included).
        # The other two are this project's own names, for code that needs the gRPC side or project.
        return {
            "BIGQUERY_EMULATOR_HOST": self.endpoint,
            "BIGQUERY_EMULATOR_GRPC_HOST": self.grpc_host,
            "BIGQUERY_EMULATOR_PROJECT": self.project,
        }
