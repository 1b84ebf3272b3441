"""Runs Google's Java ZetaSketch (the reference for BigQuery's ``HLL_COUNT.*`` format) from Python tests.

The Java side is the small CLI in ``tests/interop/zetasketch/`` (see ``SketchCheck.java`` for the line
protocol). It is compiled with Maven into the git-ignored ``.cache/`` on first use and rebuilt only when its
sources change; one JVM then serves every request, because JVM start-up dominates a single check.

Missing ``mvn``/``java`` or a failed build raise ``RuntimeError`` on purpose: a format check that quietly
skips would prove nothing.
"""

from __future__ import annotations

import atexit
import base64
import fcntl
import hashlib
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCE_DIR = Path(__file__).resolve().parent / "zetasketch"
CACHE_DIR = REPO_ROOT / ".cache"
MAVEN_REPO = CACHE_DIR / "m2"
BUILD_DIR = CACHE_DIR / "zetasketch-check"
MAIN_CLASS = "realtimeanalytics.SketchCheck"

# Precisions our pipeline (transforms/sketch.py) and BigQuery's HLL_COUNT.INIT default use.
DEFAULT_PRECISION = 15
DEFAULT_SPARSE_PRECISION = 20

_STAMP = BUILD_DIR / "sources.sha256"
_CLASSPATH_FILE = BUILD_DIR / "classpath.txt"
_CLASS_FILE = BUILD_DIR / "classes" / "realtimeanalytics" / "SketchCheck.class"
_TAIL_CHARS = 4000


class JavaSketchError(RuntimeError):
    """Java ZetaSketch answered a request with an exception (e.g. it rejected a sketch)."""


def _tail(text: str) -> str:
    return text[-_TAIL_CHARS:]


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(
            f"'{name}' is not on PATH; the ZetaSketch interop check needs Java 11+ and Maven "
            f"(e.g. apt-get install openjdk-17-jdk-headless maven)"
        )
    return path


def _sources_digest() -> str:
    digest = hashlib.sha256()
    files = [SOURCE_DIR / "pom.xml", *sorted((SOURCE_DIR / "src").rglob("*"))]
    for path in files:
        if path.is_file():
            digest.update(str(path.relative_to(SOURCE_DIR)).encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def _read_classpath() -> list[str] | None:
    """The runtime classpath of an up-to-date build, or None if a (re)build is needed."""
    if not (_STAMP.is_file() and _CLASSPATH_FILE.is_file() and _CLASS_FILE.is_file()):
        return None
    if _STAMP.read_text().strip() != _sources_digest():
        return None
    entries = [entry for entry in _CLASSPATH_FILE.read_text().strip().split(":") if entry]
    # A wiped Maven cache leaves classpath.txt pointing at jars that are gone.
    if not entries or not all(Path(entry).is_file() for entry in entries):
        return None
    return [str(BUILD_DIR / "classes"), *entries]


def ensure_built() -> list[str]:
    """Builds the Java CLI if needed and returns the command that starts it."""
    java = _require_tool("java")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    # A lock so two pytest processes sharing the tree do not run Maven into the same directory at once.
    with open(CACHE_DIR / "zetasketch-check.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        classpath = _read_classpath()
        if classpath is None:
            mvn = _require_tool("mvn")
            # Start clean so classes of deleted or renamed sources cannot linger.
            shutil.rmtree(BUILD_DIR, ignore_errors=True)
            command = [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",  # plain text in the error message below
                "-f",
                str(SOURCE_DIR / "pom.xml"),
                f"-Dmaven.repo.local={MAVEN_REPO}",
                f"-DcheckBuildDir={BUILD_DIR}",
                "compile",
            ]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise RuntimeError(
                    f"building the ZetaSketch Java check failed (exit {result.returncode}): "
                    f"{' '.join(command)}\n--- stdout (tail) ---\n{_tail(result.stdout)}"
                    f"\n--- stderr (tail) ---\n{_tail(result.stderr)}"
                )
            # Written last: an interrupted build has no stamp and is redone next time.
            _STAMP.write_text(_sources_digest() + "\n")
            classpath = _read_classpath()
            if classpath is None:
                raise RuntimeError(
                    f"'{' '.join(command)}' succeeded but {_CLASS_FILE} or a jar in {_CLASSPATH_FILE} is missing"
                )
    return [java, "-cp", ":".join(classpath), MAIN_CLASS]


def _b64(data: bytes) -> str:
    return base64.b64encode(bytes(data)).decode("ascii")


class ZetaSketchJava:
    """One running JVM with the ZetaSketch CLI; use as a context manager or call ``close()``."""

    def __init__(self) -> None:
        self._command = ensure_built()
        # stderr goes to a file, not a pipe: an unread pipe could fill up and stall the JVM. It lives as
        # long as the process, so close() closes it rather than a with-block.
        self._stderr: IO[str] = tempfile.TemporaryFile(mode="w+", encoding="utf-8")  # noqa: SIM115
        self._process = subprocess.Popen(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            encoding="utf-8",
        )
        self._lock = threading.Lock()
        try:
            pong = self._request(["ping"])
            if pong != ["pong"]:
                raise RuntimeError(f"unexpected answer to ping from {' '.join(self._command)}: {pong}")
        except BaseException:
            self.close()
            raise

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        return _tail(self._stderr.read())

    def _stopped(self, reason: str) -> RuntimeError:
        return RuntimeError(
            f"the ZetaSketch Java check stopped (exit code {self._process.poll()}, {reason}): "
            f"{' '.join(self._command)}\n--- stderr (tail) ---\n{self._stderr_tail()}"
        )

    def _request(self, fields: Sequence[str]) -> list[str]:
        assert self._process.stdin is not None and self._process.stdout is not None
        with self._lock:
            try:
                self._process.stdin.write("\t".join(fields) + "\n")
                self._process.stdin.flush()
                line = self._process.stdout.readline()
            except OSError as error:  # BrokenPipeError: the JVM is gone
                raise self._stopped(str(error)) from error
            if not line:
                raise self._stopped("no answer")
        status, *rest = line.rstrip("\n").split("\t")
        if status == "ok":
            return rest
        raise JavaSketchError(f"Java ZetaSketch failed on '{fields[0]}': {' '.join(rest)}")

    def estimate(self, sketches: Iterable[bytes]) -> list[int]:
        """``HyperLogLogPlusPlus.forProto(bytes).result()`` for each sketch."""
        return [int(value) for value in self._request(["estimate", *map(_b64, sketches)])]

    def merge(self, sketches: Iterable[bytes]) -> tuple[int, bytes]:
        """Merges the sketches in order (into the first) and returns Java's estimate and serialized bytes."""
        estimate, data = self._request(["merge", *map(_b64, sketches)])
        return int(estimate), base64.b64decode(data)

    def build(
        self,
        values: Iterable[str],
        precision: int = DEFAULT_PRECISION,
        sparse_precision: int = DEFAULT_SPARSE_PRECISION,
    ) -> bytes:
        """A Java ``buildForStrings()`` sketch of ``values`` (``sparse_precision=0`` disables sparse mode)."""
        encoded = (_b64(value.encode("utf-8")) for value in values)
        _, data = self._request(["build", str(precision), str(sparse_precision), *encoded])
        return base64.b64decode(data)

    def reserialize(self, sketch: bytes) -> bytes:
        """``forProto(bytes).serializeToByteArray()``: Java's own encoding of the same state."""
        (data,) = self._request(["reserialize", _b64(sketch)])
        return base64.b64decode(data)

    def info(self, sketch: bytes) -> dict[str, str]:
        """The proto fields as Java's generated proto classes parse them (representation, precisions...)."""
        return dict(field.split("=", 1) for field in self._request(["info", _b64(sketch)]))

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._stderr.close()

    def __enter__(self) -> ZetaSketchJava:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


_shared: ZetaSketchJava | None = None
_shared_lock = threading.Lock()


def shared() -> ZetaSketchJava:
    """A process-wide JVM for the module-level helpers, started on first use and stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ZetaSketchJava()
            atexit.register(_shared.close)
        return _shared


def java_estimate(sketches: Iterable[bytes]) -> list[int]:
    return shared().estimate(sketches)


def java_merge(sketches: Iterable[bytes]) -> tuple[int, bytes]:
    return shared().merge(sketches)


def java_build(
    values: Iterable[str],
    precision: int = DEFAULT_PRECISION,
    sparse_precision: int = DEFAULT_SPARSE_PRECISION,
) -> bytes:
    return shared().build(values, precision, sparse_precision)
