"""Memory of a running Flink job, sampled in the background: TaskManager heap and direct memory (Flink's REST metrics)
and the resident memory of the SDK workers the TaskManagers started (Python and Java, from /proc).

Used by the Flink benchmarks (peaks during a catch-up, a time series during the soak). The workers are found as
processes on this machine below a TaskManager process, so the cluster must run here (the project's session cluster).
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

_MB = 1 << 20
# Flink's JVM metrics of a TaskManager (REST /taskmanagers/<id>/metrics).
HEAP = "Status.JVM.Memory.Heap.Used"
HEAP_MAX = "Status.JVM.Memory.Heap.Max"
DIRECT = "Status.JVM.Memory.Direct.MemoryUsed"
DIRECT_MAX = "Status.JVM.Memory.Direct.TotalCapacity"
_METRICS = (HEAP, HEAP_MAX, DIRECT, DIRECT_MAX)
PYTHON_WORKER = "apache_beam.runners.worker.sdk_worker_main"
JAVA_WORKER = "org.apache.beam.fn.harness.FnHarness"


def rest_get(rest_url: str, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(f"{rest_url}{path}", timeout=timeout) as response:
        return json.loads(response.read())


def task_manager_memory(rest_url: str) -> list[dict[str, float]]:
    """Per TaskManager: heap and direct memory used and their limits, bytes."""
    result = []
    for tm in rest_get(rest_url, "/taskmanagers").get("taskmanagers", []):
        values = rest_get(rest_url, f"/taskmanagers/{tm['id']}/metrics?get={','.join(_METRICS)}")
        result.append({item["id"]: float(item["value"]) for item in values})
    return result


def task_manager_processes(root_pid: int | None = None) -> list[psutil.Process]:
    """The TaskManager JVMs below ``root_pid`` (a cluster's supervisor), or all on this machine when None: other
    clusters (a test suite's, another benchmark's) must not count in a cluster's figures."""
    if root_pid is None:
        candidates = list(psutil.process_iter(["cmdline"]))
    else:
        try:
            candidates = psutil.Process(root_pid).children(recursive=True)
        except psutil.Error:
            return []
    found = []
    for proc in candidates:
        try:
            cmdline = proc.cmdline()
        except psutil.Error:
            continue
        if any(arg.endswith("TaskManagerRunner") for arg in cmdline):
            found.append(proc)
    return found


_HEAP_USED = re.compile(r"heap\s+total \d+K, used (\d+)K")


def live_heap_mb(pid: int) -> float | None:
    """The heap a JVM still uses after a full collection (``jcmd GC.run``, then ``GC.heap_info``): its live set. The
    heap used between collections says little: G1 leaves old garbage until the heap fills to 45 %."""
    try:
        subprocess.run(["jcmd", str(pid), "GC.run"], capture_output=True, timeout=60, check=True)
        info = subprocess.run(["jcmd", str(pid), "GC.heap_info"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    found = _HEAP_USED.search(info)
    return int(found.group(1)) / 1024 if found else None


def worker_rss(task_managers: list[psutil.Process]) -> dict[str, list[int]]:
    """RSS (bytes) of each SDK worker below the given TaskManagers: {"python": [...], "java": [...]}."""
    rss: dict[str, list[int]] = {"python": [], "java": []}
    for tm in task_managers:
        try:
            children = tm.children(recursive=True)
        except psutil.Error:
            continue
        for child in children:
            try:
                cmdline = " ".join(child.cmdline())
                if PYTHON_WORKER in cmdline:
                    rss["python"].append(child.memory_info().rss)
                elif JAVA_WORKER in cmdline:
                    rss["java"].append(child.memory_info().rss)
            except psutil.Error:
                continue
    return rss


@dataclass
class Sample:
    at_s: float  # since the monitor started
    heap_mb: float  # summed over TaskManagers
    direct_mb: float
    python_rss_mb: float  # summed over Python workers
    java_worker_rss_mb: float
    python_workers: int
    heap_live_mb: float | None = None  # after a full collection (``gc_every``), summed over TaskManagers


@dataclass
class ClusterMonitor:
    """Samples every ``interval`` seconds in a thread while used as a context manager."""

    rest_url: str
    interval: float = 2.0
    root_pid: int | None = None  # the cluster's supervisor: only its TaskManagers and workers count
    gc_every: float | None = None  # seconds between live-heap samples (a full GC each); None: none
    samples: list[Sample] = field(default_factory=list)
    heap_max_mb: float = 0.0
    direct_max_mb: float = 0.0
    errors: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()
        self._next_gc = self._started + (self.gc_every or 0)

    def __enter__(self) -> ClusterMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        try:
            memory = task_manager_memory(self.rest_url)
        except OSError:
            self.errors += 1
            return
        task_managers = task_manager_processes(self.root_pid)
        rss = worker_rss(task_managers)
        live = None
        if self.gc_every and time.monotonic() >= self._next_gc and task_managers:
            self._next_gc = time.monotonic() + self.gc_every
            heaps = [live_heap_mb(tm.pid) for tm in task_managers]
            live = sum(heaps) if None not in heaps else None
        self.heap_max_mb = sum(tm.get(HEAP_MAX, 0.0) for tm in memory) / _MB
        self.direct_max_mb = sum(tm.get(DIRECT_MAX, 0.0) for tm in memory) / _MB
        self.samples.append(
            Sample(
                at_s=round(time.monotonic() - self._started, 1),
                heap_mb=sum(tm.get(HEAP, 0.0) for tm in memory) / _MB,
                direct_mb=sum(tm.get(DIRECT, 0.0) for tm in memory) / _MB,
                python_rss_mb=sum(rss["python"]) / _MB,
                java_worker_rss_mb=sum(rss["java"]) / _MB,
                python_workers=len(rss["python"]),
                heap_live_mb=live,
            )
        )

    def peaks(self) -> dict[str, float]:
        """Peak of each series (MB), and the limits."""
        if not self.samples:
            return {}
        return {
            "tm_heap_peak_mb": round(max(s.heap_mb for s in self.samples)),
            "tm_heap_max_mb": round(self.heap_max_mb),
            "tm_direct_peak_mb": round(max(s.direct_mb for s in self.samples)),
            "tm_direct_max_mb": round(self.direct_max_mb),
            "python_worker_peak_rss_mb": round(max(s.python_rss_mb for s in self.samples)),
            "python_workers": max(s.python_workers for s in self.samples),
            "java_worker_peak_rss_mb": round(max(s.java_worker_rss_mb for s in self.samples)),
        }
