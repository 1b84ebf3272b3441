"""Arming the fault injection points of ``transforms/faults.py`` from a test (the product side only ever fires them).

A point is armed by creating ``<directory>/<point>``; workers that see ``$REALTIME_ANALYTICS_FAULTS`` = ``directory``
fail once at it and remove the file, so ``is_armed`` afterwards tells whether the fault fired.
"""

from __future__ import annotations

import os

from transforms.faults import FAULTS_DIR_ENV

__all__ = ["FAULTS_DIR_ENV", "arm", "is_armed"]


def arm(directory: str, point: str) -> None:
    """Arms ``point`` for workers that see ``$REALTIME_ANALYTICS_FAULTS`` = ``directory``."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, point), "w"):
        pass


def is_armed(directory: str, point: str) -> bool:
    return os.path.exists(os.path.join(directory, point))
