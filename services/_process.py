"""Process, port, wait and log helpers shared by every local service and install step.

Services run as plain child processes, each in its own session (process group), so stopping one
means signalling the whole group: a JVM or a uvicorn server cannot leave helpers behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

import psutil

LOCALHOST = "127.0.0.1"
TAIL_LINES = 40
# Maven colours its output even in batch mode; escape codes only clutter an error message.
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class ServiceError(RuntimeError):
    """A service could not be installed, started, probed or stopped."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_ports(1)[0]


# Ports handed out by this process: a server picked earlier may not listen yet (a JVM takes seconds), so its port still
# looks free; `services up --dynamic-ports` picks for every service before any of them binds.
_HANDED_OUT: set[int] = set()


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that nothing listens on right now, none in ``avoid`` nor handed out
    by an earlier call in this process.

    All sockets stay bound until every port is picked: the kernel cannot hand the same ephemeral port out twice while
    it is bound, which picking one port at a time (bind, close, bind again) does not guarantee (a Kafka broker then
    got one port for two listeners and refused to start).
    """
    taken = set(avoid) | _HANDED_OUT
    sockets: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOCALHOST, 0))
            port = int(sock.getsockname()[1])
            if port not in taken:  # still bound, so never picked again by this loop
                ports.append(port)
                taken.add(port)
            if len(sockets) > count + 1000:
                raise ServiceError(f"could not find {count} free ports on {LOCALHOST}")
    finally:
        for sock in sockets:
            sock.close()
    _HANDED_OUT.update(ports)
    return ports


def port_open(port: int, host: str = LOCALHOST, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def log_tail(path: Path | None, lines: int = TAIL_LINES) -> str:
    """Last lines of a log file, or a note saying why there is none."""
    if path is None:
        return "(no log file)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(log {path} unreadable: {exc})"
    kept = _ANSI_ESCAPE.sub("", text).rstrip("\n").splitlines()[-lines:]
    return "\n".join(kept) if kept else "(log is empty)"


def failure(service: str, problem: str, command: Sequence[str] | None, log_path: Path | None) -> ServiceError:
    """One error message that names the service, the command and the log tail."""
    cmd = shlex.join(command) if command else "(none)"
    indented = "\n".join("    " + line for line in log_tail(log_path).splitlines())
    return ServiceError(f"[{service}] {problem}\n  command: {cmd}\n  log: {log_path}\n  log tail:\n{indented}")


def run_step(
    service: str,
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 900,
) -> None:
    """Run a finite command (install, format, build), appending its output to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        log.flush()
        try:
            # Own session, so a timeout or Ctrl-C also ends the step's children (go build's
            # compilers, pip's builds), not just the command itself.
            proc = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise failure(service, f"program not found: {exc.filename}", command, log_path) from exc
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group_now(proc)
            raise failure(service, f"step timed out after {timeout:.0f}s", command, log_path) from exc
        except BaseException:
            _kill_group_now(proc)
            raise
    if returncode != 0:
        raise failure(service, f"step failed with exit code {returncode}", command, log_path)


def _kill_group_now(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# Looked up once in the parent: the child, between fork and exec, should only make the call
# (resolving symbols there could wait on a loader lock another thread held at fork time).
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child before exec: Linux sends it SIGTERM when the parent (thread) dies, so a
    # killed pytest run leaves no broker behind.
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def spawn(
    command: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = True,
) -> subprocess.Popen[bytes]:
    """Start a long-running process in a new session, its output going to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec_fn = None
    if die_with_parent:
        # util-linux's setpriv sets the death signal and execs the command: no Python code runs in the forked child.
        # A preexec_fn does, and in a process with gRPC threads (a test run after a Beam job) the child crashed in
        # threading's after-fork hook (seen: "Fatal Python error: Segmentation fault" starting a Flink cluster).
        setpriv = shutil.which("setpriv")
        if setpriv is not None:
            command = [setpriv, "--pdeathsig", "TERM", "--", *command]
        else:
            preexec_fn = _die_with_parent
    with log_path.open("ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        log.flush()
        return subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )


def create_time(pid: int) -> float | None:
    """Start time of pid, used with the pid to recognise the same process later (pids get reused)."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_alive(pid: int, started: float | None) -> bool:
    """True when pid runs and, if started is given, is the process that was started then."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - started) < 1.0
    except psutil.Error:
        return False


def _group_alive(pgid: int) -> bool:
    """True while a member of the process group still runs (zombies do not count)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # Exited members of a group whose parent is gone wait for PID 1 to reap them, which here can
    # take seconds; they hold no ports or files any more, so they count as stopped.
    for proc in psutil.process_iter(["status"]):
        with contextlib.suppress(psutil.Error, OSError):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
    return False


def _reap(pid: int, *, block: bool = False) -> None:
    # Our own child stays a zombie (and keeps its group "alive") until waited for; a process
    # started by an earlier `services up` is not our child, which waitpid reports as an error.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0 if block else os.WNOHANG)


def stop_group(pid: int, started: float | None, *, grace: float = 20.0) -> None:
    """SIGTERM the process group led by pid, wait up to grace seconds, then SIGKILL what is left.

    The pid/start-time pair guards against signalling an unrelated process that reuses the pid.
    """
    if not is_alive(pid, started):
        _reap(pid)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(pid)
        if not _group_alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    _reap(pid, block=True)


def wait_until(
    probe: Callable[[], None],
    *,
    timeout: float,
    still_running: Callable[[], bool],
    interval: float = 0.25,
) -> None:
    """Call probe until it returns without raising, the process dies, or timeout passes.

    Raises TimeoutError (process alive, never healthy) or ChildProcessError (process died), each
    carrying the probe's last error, for the caller to turn into a ServiceError with the log tail.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        if not still_running():
            raise ChildProcessError(f"process exited before it became healthy (last probe: {last_error})")
        try:
            probe()
            return
        except Exception as exc:  # noqa: BLE001 - any probe failure just means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not healthy after {timeout:g}s (last probe: {last_error!r})")
        time.sleep(interval)
