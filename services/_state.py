"""The state file (.cache/services/state.json): which services `services up` left running.

`down`, `status` and the pytest fixtures read it to find those processes again (pid, start time,
ports, work dir). Writes are atomic and locked so two commands never interleave.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.cache import STATE_DIR

STATE_FILE = STATE_DIR / "state.json"


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with (STATE_DIR / "state.lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        # A truncated or hand-edited file must not block `down`; it only loses the old entries.
        return {}
    return data if isinstance(data, dict) else {}


def load() -> dict[str, dict[str, Any]]:
    """All recorded services, by name."""
    with _lock():
        return _read(STATE_FILE)


def record(name: str, entry: dict[str, Any] | None) -> None:
    """Set (or with None remove) one service's entry."""
    with _lock():
        data = _read(STATE_FILE)
        if entry is None:
            data.pop(name, None)
        else:
            data[name] = entry
        tmp = STATE_FILE.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, STATE_FILE)
