"""LocalService: the life cycle every local service shares (install, start, probe, stop, record).

A subclass says how to install itself, which ports it needs, its command line, and how a real
client proves it healthy; everything else (ports, work dir, log, process group, state) is here.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from services import _state
from services._process import (
    ServiceError,
    create_time,
    failure,
    free_ports,
    is_alive,
    port_open,
    spawn,
    stop_group,
    wait_until,
)

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self needs 3.11; the project still allows 3.10


# Temp work dirs live under one root so that dirs left by a killed run (kill -9 allows no clean-up)
# can be found and removed by the next start.
WORK_ROOT = Path(tempfile.gettempdir()) / "realtime-analytics-services"
_OWNER_FILE = "owner.json"
_UNCLAIMED_MAX_AGE = 3600.0


def _sweep_work_dirs() -> None:
    """Remove work dirs whose server no longer runs."""
    if not WORK_ROOT.is_dir():
        return
    for work_dir in WORK_ROOT.iterdir():
        try:
            owner = json.loads((work_dir / _OWNER_FILE).read_text())
            dead = not is_alive(int(owner["pid"]), owner.get("started_at"))
        except (OSError, ValueError, KeyError, TypeError):
            # No readable owner: either being set up right now, or a crash before spawn.
            try:
                dead = time.time() - work_dir.stat().st_mtime > _UNCLAIMED_MAX_AGE
            except OSError:
                continue
        if dead:
            shutil.rmtree(work_dir, ignore_errors=True)


class LocalService(abc.ABC):
    """A real server run as a local process on 127.0.0.1.

    Ports not given are picked free at start(); `services up` passes `fixed_ports` instead. The
    work dir (data + log) is a fresh temp dir unless given, and is removed by stop() when it was
    created here. With die_with_parent (the default) the process gets SIGTERM if the starting
    thread dies, so an aborted test run leaves no server behind; `services up` turns that off.
    """

    name: ClassVar[str]
    port_names: ClassVar[tuple[str, ...]]
    fixed_ports: ClassVar[dict[str, int]]
    startup_timeout: ClassVar[float] = 120.0
    stop_grace: ClassVar[float] = 20.0

    def __init__(
        self,
        *,
        ports: Mapping[str, int] | None = None,
        work_dir: Path | None = None,
        die_with_parent: bool = True,
    ) -> None:
        self._ports: dict[str, int] = dict(ports or {})
        self._work_dir = work_dir
        self._remove_work_dir = False
        self._die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._pid: int | None = None
        self._started_at: float | None = None
        self._command: list[str] = []
        # False for a service found through the state file: whoever started it stops it.
        self.owned = True
        # Seconds from start() (after install) until healthy, for reports.
        self.startup_seconds: float | None = None
        self._launched: float | None = None

    # ---- what a subclass provides -------------------------------------------------------------

    @abc.abstractmethod
    def install(self) -> None:
        """Fetch or build what the service needs (idempotent, cached under .cache/)."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """The server's command line (ports and work dir are known by now)."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Raise unless a real client can use the service right now; keep each call short."""

    @abc.abstractmethod
    def addresses(self) -> dict[str, str]:
        """Human-readable addresses, e.g. {"bootstrap": "127.0.0.1:19092"}."""

    @abc.abstractmethod
    def env_vars(self) -> dict[str, str]:
        """Environment variables that point clients at this service."""

    def environment(self) -> dict[str, str]:
        """Environment of the server process."""
        return dict(os.environ)

    def prepare(self) -> None:  # noqa: B027 - optional hook, most services need nothing
        """Write config files or format storage before the server starts."""

    def options(self) -> dict[str, Any]:
        """Extra constructor arguments to keep in the state file (JSON-serialisable)."""
        return {}

    @classmethod
    def options_beside(cls, others: Sequence[LocalService]) -> dict[str, Any]:
        """Constructor arguments `services up` passes when ``others`` run already or start together (e.g. which
        cluster to scrape); most services need none."""
        return {}

    # ---- life cycle ------------------------------------------------------------------------------

    @property
    def ports(self) -> dict[str, int]:
        return dict(self._ports)

    @property
    def pid(self) -> int | None:
        return self._pid

    @property
    def work_dir(self) -> Path:
        if self._work_dir is None:
            raise ServiceError(f"[{self.name}] has no work dir before start()")
        return self._work_dir

    @property
    def log_path(self) -> Path:
        return self.work_dir / f"{self.name}.log"

    def _log_or_none(self) -> Path | None:
        return self.log_path if self._work_dir is not None else None

    def pick_ports(self) -> dict[str, int]:
        """Fills in the ports not given: picked together, distinct from each other and from the given ones."""
        missing = [name for name in self.port_names if name not in self._ports]
        self._ports.update(zip(missing, free_ports(len(missing), avoid=self._ports.values()), strict=True))
        ports = list(self._ports.values())
        if len(set(ports)) != len(ports):
            raise failure(self.name, f"two of its ports are the same: {self._ports}", None, None)
        return self.ports

    def start(self) -> Self:
        """Install if needed, then launch the server; does not wait for it (see wait_healthy)."""
        if self.is_running():
            return self
        self.install()
        self._launched = time.monotonic()
        self.pick_ports()
        busy = {n: p for n, p in self._ports.items() if port_open(p)}
        if busy:
            raise failure(
                self.name,
                f"port(s) already in use: {busy} (another server, or one `services up` left: "
                "try `python -m services down`, or --dynamic-ports)",
                None,
                None,
            )
        if self._work_dir is None:
            _sweep_work_dirs()
            WORK_ROOT.mkdir(parents=True, exist_ok=True)
            self._work_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=WORK_ROOT))
            self._remove_work_dir = True
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            self.prepare()
            self._command = self.command()
            self._spawn()
        except OSError as exc:
            error = failure(self.name, f"could not start: {exc}", self._command, self._log_or_none())
            self.stop()
            raise error from exc
        except BaseException:
            # The error (e.g. a failed storage format) already quotes the log; drop the temp dir.
            self.stop()
            raise
        self.owned = True
        if self._die_with_parent:
            # Belt and braces next to PDEATHSIG: a normal interpreter exit stops it cleanly too.
            atexit.register(self.stop)
        return self

    def _spawn(self) -> None:
        """Runs ``self._command`` in the work dir and records the process (pid, start time, owner file)."""
        self._proc = spawn(
            self._command,
            log_path=self.log_path,
            env=self.environment(),
            cwd=self.work_dir,
            die_with_parent=self._die_with_parent,
        )
        self._pid = self._proc.pid
        self._started_at = create_time(self._pid)
        owner = {"pid": self._pid, "started_at": self._started_at}
        (self.work_dir / _OWNER_FILE).write_text(json.dumps(owner))

    def restart(self, *, crash: bool = False, down_for: float = 0.0) -> Self:
        """Fault injection: stop the server (``crash``: SIGKILL its process group, no clean shutdown), stay down for
        ``down_for`` seconds, then run the same command on the same ports and data again; returns once healthy.

        Only for a server this object started (``owned``) with its command and work dir still in place.
        """
        if not self.owned or self._pid is None or not self._command:
            raise ServiceError(f"[{self.name}] restart() needs a running server started by this object")
        if crash:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._pid, signal.SIGKILL)
        stop_group(self._pid, self._started_at, grace=self.stop_grace)
        time.sleep(down_for)
        self._launched = time.monotonic()
        self._spawn()
        return self.wait_healthy()

    def wait_healthy(self, timeout: float | None = None) -> Self:
        """Block until probe() passes; on failure stop an owned server and raise ServiceError."""
        if self._pid is None:
            raise ServiceError(f"[{self.name}] wait_healthy() called before start()")
        limit = self.startup_timeout if timeout is None else timeout
        began = time.monotonic()
        try:
            wait_until(self.probe, timeout=limit, still_running=self.is_running)
        except (TimeoutError, ChildProcessError) as exc:
            # Read the log before stop() removes the work dir.
            error = failure(self.name, str(exc), self._command, self._log_or_none())
            if self.owned:
                self.stop()
            raise error from exc
        self.startup_seconds = time.monotonic() - (self._launched or began)
        return self

    def is_running(self) -> bool:
        if self._proc is not None:
            return self._proc.poll() is None
        return self._pid is not None and is_alive(self._pid, self._started_at)

    def stop(self) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL after stop_grace) and clean up."""
        if self._pid is not None:
            stop_group(self._pid, self._started_at, grace=self.stop_grace)
        if self._proc is not None:
            self._proc.poll()
        self._pid = None
        self._proc = None
        if self._remove_work_dir and self._work_dir is not None:
            # Only ever a dir this module created: the state file is plain JSON anyone can edit.
            if self._work_dir.resolve().parent == WORK_ROOT.resolve():
                shutil.rmtree(self._work_dir, ignore_errors=True)
            self._work_dir = None
            self._remove_work_dir = False

    def __enter__(self) -> Self:
        self.start()
        try:
            return self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- state file ------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "pid": self._pid,
            "started_at": self._started_at,
            "ports": self._ports,
            "work_dir": str(self._work_dir) if self._work_dir else None,
            "remove_work_dir": self._remove_work_dir,
            "log": str(self._log_or_none()),
            "command": self._command,
            "options": self.options(),
            "addresses": self.addresses(),
            "env": self.env_vars(),
        }

    @classmethod
    def from_state(cls, entry: Mapping[str, Any]) -> Self:
        """A handle on a server recorded in the state file (not owned: stop() only on request)."""
        service = cls(
            ports=entry.get("ports") or {},
            work_dir=Path(entry["work_dir"]) if entry.get("work_dir") else None,
            **(entry.get("options") or {}),
        )
        service._pid = entry.get("pid")
        service._started_at = entry.get("started_at")
        service._command = list(entry.get("command") or [])
        service._remove_work_dir = bool(entry.get("remove_work_dir"))
        service.owned = False
        return service

    @classmethod
    def find_running(cls, probe_timeout: float = 10.0) -> Self | None:
        """The server `services up` recorded, if it still runs and passes its probe."""
        entry = _state.load().get(cls.name)
        if not entry:
            return None
        service = cls.from_state(entry)
        if not service.is_running():
            return None
        try:
            wait_until(service.probe, timeout=probe_timeout, still_running=service.is_running)
        except (TimeoutError, ChildProcessError):
            return None
        return service

    def __repr__(self) -> str:
        return f"{type(self).__name__}(pid={self._pid}, ports={self._ports})"
