"""Build or download something into .cache once: under a file lock, recorded by a stamp of its inputs.

Every cached artifact (the Kafka and Beam Java jars, Prism, pstest, the BigQuery emulator's venv, the Flink
distribution) follows the same rule, so a fresh clone installs what it needs by itself and a rerun costs nothing:

- the stamp file holds a fingerprint of what the artifact is made from (a pom, a version, tool versions); a
  matching stamp (and the artifact in place) means there is nothing to do;
- otherwise the install runs under an exclusive lock, so parallel test workers, ``make services-up`` and a test
  run never build the same thing twice; the stamp is checked again once the lock is held, because the process
  that held it before may just have finished the same install;
- the stamp is written only after the install returned: an interrupted or failed install is redone next time.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Callable, Iterator
from pathlib import Path


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created with its directory) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def stamp_matches(stamp: Path, fingerprint: str) -> bool:
    try:
        return stamp.read_text().strip() == fingerprint
    except OSError:
        return False


def install_once(
    stamp: Path,
    fingerprint: str,
    lock: Path,
    install: Callable[[], None],
    *,
    present: Callable[[], bool] = lambda: True,
) -> bool:
    """Runs ``install`` unless ``stamp`` holds ``fingerprint`` and ``present()``; returns whether it ran."""

    def current() -> bool:
        return stamp_matches(stamp, fingerprint) and present()

    if current():
        return False
    with file_lock(lock):
        if current():
            return False
        install()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
    return True
