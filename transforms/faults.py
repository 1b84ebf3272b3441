"""Fault injection points for tests: a named point fails once, in whichever worker reaches it first.

A test creates the file ``$REALTIME_ANALYTICS_FAULTS/<point>``; the first caller of ``fail_once(point)`` removes it (an
atomic rename-free unlink: only one caller can succeed) and raises ``InjectedFault``, so exactly one attempt fails and
the runner's retry of that work meets no fault. With the variable unset (production) a call costs one environment
lookup. Tests arm points with ``tests/integration/fault_points.py``. Used to prove that a retried bundle does not write
twice (docs/connectors-bigquery.md).
"""

from __future__ import annotations

import os

FAULTS_DIR_ENV = "REALTIME_ANALYTICS_FAULTS"


class InjectedFault(RuntimeError):
    """Raised by an armed fault point."""


def fail_once(point: str) -> None:
    """Raises InjectedFault if the fault ``point`` is armed (its file exists); disarms it first."""
    directory = os.environ.get(FAULTS_DIR_ENV)
    if not directory:
        return
    try:
        os.remove(os.path.join(directory, point))
    except FileNotFoundError:
        return
    raise InjectedFault(f"injected fault at {point!r} (test fault injection, {FAULTS_DIR_ENV}={directory})")
