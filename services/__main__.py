"""python -m services up|down|status|env|install [NAME ...]

up      install what is missing, start the services in the background on fixed ports
        (Kafka 19092/19093, Flink 18081 REST + 16123 RPC + 19249/19250 metrics, Pub/Sub 18085,
        BigQuery 19050 REST + 19060 gRPC, Prometheus 19090) and record them
        in .cache/services/state.json; prints addresses and the variables to export
down    stop what `up` started (whole process groups) and remove their work dirs
status  show what runs and whether a real client can use it
env     print only the `export` lines, for `eval "$(python -m services env)"`
install fetch/build everything into .cache/ without starting anything (prints step times)
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services import SERVICES, LocalService, ServiceError, _state

_PROBE_TIMEOUT = 5.0


def _selected(names: Sequence[str]) -> list[type[LocalService]]:
    unknown = [n for n in names if n not in SERVICES]
    if unknown:
        raise SystemExit(f"unknown service(s) {unknown}; choose from {sorted(SERVICES)}")
    return [SERVICES[n] for n in (names or SERVICES)]


def _print_env(services: Sequence[LocalService]) -> None:
    for service in services:
        for key, value in service.env_vars().items():
            print(f"export {key}={value}")


def _describe(service: LocalService) -> str:
    addresses = ", ".join(f"{k}={v}" for k, v in service.addresses().items())
    return f"{service.name:9s} pid {service.pid:<7} {addresses}"


def _forget_stale(cls: type[LocalService]) -> None:
    # A recorded server that died (reboot, OOM, kill) still has a temp dir to clean up.
    entry = _state.load().get(cls.name)
    if entry:
        cls.from_state(entry).stop()
        _state.record(cls.name, None)


def cmd_install(classes: Sequence[type[LocalService]]) -> int:
    for cls in classes:
        began = time.monotonic()
        cls().install()
        print(f"{cls.name:9s} installed/checked in {time.monotonic() - began:.1f}s")
    return 0


def cmd_up(classes: Sequence[type[LocalService]], dynamic_ports: bool) -> int:
    running: list[LocalService] = []
    to_start: list[type[LocalService]] = []
    for cls in classes:
        found = cls.find_running(probe_timeout=_PROBE_TIMEOUT)
        if found is not None:
            print(f"{cls.name:9s} already running")
            running.append(found)
        else:
            _forget_stale(cls)
            to_start.append(cls)

    # Installs run one after another (mvn, go build and pip each want both cores); the servers
    # then start together so the slow JVM start overlaps the others.
    cmd_install(to_start)
    started: list[LocalService] = []
    try:
        for cls in to_start:
            ports = None if dynamic_ports else cls.fixed_ports
            service = cls(ports=ports, die_with_parent=False, **cls.options_beside([*running, *started]))
            started.append(service.start())
        # Waited for side by side, so each reported time is that server's own start-up time.
        with ThreadPoolExecutor(max_workers=len(started) or 1) as pool:
            futures = [pool.submit(service.wait_healthy) for service in started]
        for service, future in zip(started, futures, strict=True):
            future.result()  # re-raises the first ServiceError
            _state.record(service.name, service.to_state())
            print(f"{service.name:9s} healthy in {service.startup_seconds:.1f}s (start + probe)")
    except ServiceError:
        for service in started:
            service.stop()
            _state.record(service.name, None)
        raise
    running += started
    print()
    for service in running:
        print(_describe(service))
    print(f"\nstate: {_state.STATE_FILE}\n")
    _print_env(running)
    return 0


def _stop_recorded(cls: type[LocalService], entry: dict[str, Any]) -> str:
    service = cls.from_state(entry)
    was_running = service.is_running()
    began = time.monotonic()
    service.stop()
    _state.record(cls.name, None)
    verb = f"stopped in {time.monotonic() - began:.1f}s" if was_running else "was not running"
    return f"{cls.name:9s} {verb} (pid {entry.get('pid')})"


def cmd_down(classes: Sequence[type[LocalService]]) -> int:
    entries = _state.load()
    recorded = [(cls, entries[cls.name]) for cls in classes if cls.name in entries]
    # Stopped side by side: Kafka's controlled shutdown alone takes seconds.
    with ThreadPoolExecutor(max_workers=len(recorded) or 1) as pool:
        for line in pool.map(lambda pair: _stop_recorded(*pair), recorded):
            print(line)
    return 0


def cmd_status(classes: Sequence[type[LocalService]]) -> int:
    entries = _state.load()
    unhealthy = 0
    healthy: list[LocalService] = []
    for cls in classes:
        entry = entries.get(cls.name)
        if not entry:
            print(f"{cls.name:9s} not started")
            continue
        service = cls.from_state(entry)
        if not service.is_running():
            print(f"{cls.name:9s} DEAD (recorded pid {entry.get('pid')}; log {entry.get('log')})")
            unhealthy += 1
        elif cls.find_running(probe_timeout=_PROBE_TIMEOUT) is None:
            print(f"{cls.name:9s} UNHEALTHY pid {service.pid} (log {entry.get('log')})")
            unhealthy += 1
        else:
            print(f"{_describe(service)}  healthy")
            healthy.append(service)
    if healthy:
        print()
        _print_env(healthy)
    return 1 if unhealthy else 0


def cmd_env(classes: Sequence[type[LocalService]]) -> int:
    entries = _state.load()
    services = [cls.from_state(entries[cls.name]) for cls in classes if cls.name in entries]
    _print_env([s for s in services if s.is_running()])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "install"])
    parser.add_argument("names", nargs="*", help=f"services (default: all of {', '.join(SERVICES)})")
    parser.add_argument("--dynamic-ports", action="store_true", help="up: pick free ports instead of the fixed ones")
    args = parser.parse_args(argv)
    classes = _selected(args.names)
    try:
        if args.command == "up":
            return cmd_up(classes, args.dynamic_ports)
        if args.command == "down":
            return cmd_down(classes)
        if args.command == "status":
            return cmd_status(classes)
        if args.command == "env":
            return cmd_env(classes)
        return cmd_install(classes)
    except ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
