"""`python -m services up --dynamic-ports` starts every service on ports picked together and distinct (issue 12,
point 5: Kafka sometimes got one port for both of its listeners and refused to start), `status` finds them healthy
and `down` stops them. Prometheus scrapes the Flink cluster's two metrics listeners, which get ports of their own too.

The command runs with a private state directory: a cache directory whose entries link to this checkout's cache
(nothing is installed twice), so servers a developer keeps running with `services up` are neither reused nor stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from services._process import port_open
from services.cache import CACHE_DIR, REPO_ROOT

pytestmark = pytest.mark.integration


def _services(cache, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, SERVICES_CACHE_DIR=str(cache))
    return subprocess.run(
        [sys.executable, "-m", "services", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_services_up_with_dynamic_ports_gives_every_listener_its_own_port(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for entry in CACHE_DIR.iterdir():
        if entry.name != "services":  # the state file and locks stay private
            (cache / entry.name).symlink_to(entry)
    up = _services(cache, "up", "--dynamic-ports")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        # e.g. "kafka     pid 123     bootstrap=127.0.0.1:40001, controller=127.0.0.1:40002"
        lines = [line for line in up.stdout.splitlines() if " pid " in line]
        # A service's line may name a port twice (Flink: rest=http://HOST:PORT, flink_master=HOST:PORT).
        ports = {line.split()[0]: sorted({int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", line)}) for line in lines}
        assert set(ports) == {"kafka", "flink", "pubsub", "bigquery", "prometheus"}, up.stdout
        # Prometheus's line also names the two Flink metrics listeners it scrapes (Flink's own line does not).
        every = [port for service in ports.values() for port in service]
        assert len(every) == len(set(every)), ports  # within and across services
        counts = [len(ports[name]) for name in ("kafka", "flink", "pubsub", "bigquery", "prometheus")]
        assert counts == [2, 2, 1, 2, 3], ports
        assert all(port_open(port) for port in (ports["kafka"][0], ports["flink"][0], *ports["prometheus"]))
        status = _services(cache, "status", timeout=120)
        assert status.returncode == 0 and status.stdout.count("healthy") == 5, status.stdout + status.stderr
    finally:
        down = _services(cache, "down", timeout=180)
    assert down.returncode == 0, down.stdout + down.stderr
    assert not any(port_open(port) for port in every)
