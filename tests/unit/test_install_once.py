"""The rule every cached download or build follows (pipelines/local_run/install_once.py): once, under a lock, redone
when its inputs change or when it was interrupted."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from pipelines.local_run.install_once import install_once


def test_runs_once_then_costs_nothing(tmp_path: Path) -> None:
    stamp, lock, runs = tmp_path / "a" / ".stamp", tmp_path / "a.lock", []
    assert install_once(stamp, "v1", lock, lambda: runs.append(1)) is True
    assert install_once(stamp, "v1", lock, lambda: runs.append(1)) is False
    assert runs == [1] and stamp.read_text() == "v1"


def test_a_changed_fingerprint_or_a_missing_artifact_installs_again(tmp_path: Path) -> None:
    stamp, lock, runs = tmp_path / ".stamp", tmp_path / "x.lock", []
    artifact = tmp_path / "artifact"

    def install() -> None:
        runs.append(1)
        artifact.write_text("built")

    install_once(stamp, "v1", lock, install, present=artifact.exists)
    install_once(stamp, "v2", lock, install, present=artifact.exists)  # inputs changed
    artifact.unlink()
    install_once(stamp, "v2", lock, install, present=artifact.exists)  # artifact deleted by hand
    assert len(runs) == 3


def test_an_interrupted_install_writes_no_stamp_and_is_redone(tmp_path: Path) -> None:
    stamp, lock = tmp_path / ".stamp", tmp_path / "x.lock"

    def fails() -> None:
        raise RuntimeError("network down")

    with pytest.raises(RuntimeError, match="network down"):
        install_once(stamp, "v1", lock, fails)
    assert not stamp.exists()
    assert install_once(stamp, "v1", lock, lambda: None) is True


def test_concurrent_callers_install_once(tmp_path: Path) -> None:
    stamp, lock, runs = tmp_path / ".stamp", tmp_path / "x.lock", []
    entered = threading.Event()

    def slow_install() -> None:
        runs.append(1)
        entered.set()
        threading.Event().wait(0.3)  # the other caller now waits on the lock, then finds the stamp

    first = threading.Thread(target=install_once, args=(stamp, "v1", lock, slow_install))
    first.start()
    entered.wait(5)
    assert install_once(stamp, "v1", lock, slow_install) is False
    first.join()
    assert runs == [1]
