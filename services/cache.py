"""Where downloads and builds live (.cache/, git-ignored) and the idempotent steps that fill it.

Each step follows pipelines/local_run/install_once.py: a stamp holding a fingerprint of its inputs (committed files,
tool versions) means the artifact is current and the step costs nothing; otherwise it runs under a file lock,
so parallel test workers or a `services up` next to a test run never build the same thing twice.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pipelines.local_run.install_once import install_once
from services._process import failure, run_step

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
# SERVICES_CACHE_DIR lets CI point the cache at a restored directory; default is the repo's .cache.
CACHE_DIR = Path(os.environ.get("SERVICES_CACHE_DIR", REPO_ROOT / ".cache")).resolve()

STATE_DIR = CACHE_DIR / "services"
INSTALL_LOG_DIR = STATE_DIR / "install-logs"
BIN_DIR = CACHE_DIR / "bin"

KAFKA_POM = PACKAGE_DIR / "kafka" / "pom.xml"
KAFKA_LOG4J = PACKAGE_DIR / "kafka" / "log4j2.properties"
KAFKA_LIB = CACHE_DIR / "kafka" / "lib"
MAVEN_REPO = CACHE_DIR / "m2"

PSTEST_SRC = PACKAGE_DIR / "pstest"
PSTEST_BIN = BIN_DIR / "pstest"
GO_DIR = CACHE_DIR / "go"

BQ_REQUIREMENTS = PACKAGE_DIR / "bigquery" / "requirements.txt"
BQ_VENV = CACHE_DIR / "bq-venv"
# The emulator runs with HOME here: DuckDB looks for its extensions under $HOME/.duckdb.
BQ_HOME = CACHE_DIR / "bq-home"
PIP_CACHE = CACHE_DIR / "pip"
BQ_PYTHON_VERSION = "3.13"


def _fingerprint(files: Iterable[Path], *extra: str) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()


def _install_once(name: str, stamp: Path, fingerprint: str, install: Callable[[], None], **kw: Any) -> None:
    install_once(stamp, fingerprint, STATE_DIR / f"{name}.lock", install, **kw)


def _require_tool(service: str, tool: str, why: str) -> str:
    found = shutil.which(tool)
    if found is None:
        raise failure(service, f"'{tool}' is not on PATH ({why})", [tool], None)
    return found


def _tool_version(command: list[str]) -> str:
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    return (out.stdout + out.stderr).strip()


def java_executable() -> str:
    """The java binary: JAVA_HOME's if set, else the one on PATH."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    return _require_tool("kafka", "java", "Kafka runs on the JVM; install a JDK 17+")


def ensure_kafka_jars() -> Path:
    """Kafka broker jars from Maven Central in .cache/kafka/lib (the pom lists them)."""
    stamp = KAFKA_LIB / ".stamp"
    fingerprint = _fingerprint([KAFKA_POM])

    def install() -> None:
        mvn = _require_tool("kafka", "mvn", "it fetches the Kafka jars from Maven Central")
        staging = KAFKA_LIB.with_name("lib.partial")
        shutil.rmtree(staging, ignore_errors=True)
        run_step(
            "kafka",
            [
                mvn,
                "-B",
                "-q",
                "-Dstyle.color=never",
                "-f",
                str(KAFKA_POM),
                f"-Dmaven.repo.local={MAVEN_REPO}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            log_path=INSTALL_LOG_DIR / "kafka-mvn.log",
            timeout=900,
        )
        if not any(staging.glob("kafka_2.13-*.jar")):
            raise failure("kafka", f"mvn finished but copied no kafka_2.13 jar to {staging}", [mvn], None)
        # Swap the whole directory: a version bump must not leave old jars on the classpath.
        shutil.rmtree(KAFKA_LIB, ignore_errors=True)
        staging.rename(KAFKA_LIB)

    _install_once("kafka-install", stamp, fingerprint, install)
    return KAFKA_LIB


def go_env() -> dict[str, str]:
    """Environment for go commands with every Go cache inside .cache/go."""
    env = dict(os.environ)
    env.update(
        GOPATH=str(GO_DIR / "path"),
        GOMODCACHE=str(GO_DIR / "mod"),
        GOCACHE=str(GO_DIR / "build"),
        # Never download another Go toolchain (not reachable here); go.mod states what we need.
        GOTOOLCHAIN="local",
        GOFLAGS="-mod=readonly -buildvcs=false",
    )
    return env


def ensure_pstest_binary() -> Path:
    """Build Google's pstest fake (services/pstest) into .cache/bin/pstest."""
    stamp = PSTEST_BIN.with_name("pstest.stamp")
    go = _require_tool("pubsub", "go", "it builds the pstest Pub/Sub fake")
    sources = sorted(PSTEST_SRC.glob("*.go")) + [PSTEST_SRC / "go.mod", PSTEST_SRC / "go.sum"]
    fingerprint = _fingerprint(sources, _tool_version([go, "version"]))

    def install() -> None:
        BIN_DIR.mkdir(parents=True, exist_ok=True)
        partial = PSTEST_BIN.with_name("pstest.partial")
        run_step(
            "pubsub",
            [go, "build", "-trimpath", "-o", str(partial), "."],
            log_path=INSTALL_LOG_DIR / "pstest-go-build.log",
            env=go_env(),
            cwd=PSTEST_SRC,
            timeout=900,
        )
        partial.replace(PSTEST_BIN)

    _install_once("pstest-install", stamp, fingerprint, install, present=PSTEST_BIN.exists)
    return PSTEST_BIN


def _is_python313(candidate: str) -> bool:
    # Run it rather than trust the name: a pyenv shim named python3.13 may refuse to run.
    try:
        out = subprocess.run(
            [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and out.stdout.strip() == BQ_PYTHON_VERSION


def find_python313() -> str:
    """A Python 3.13 interpreter for the emulator venv (local-bigquery requires >=3.13,<3.14)."""
    candidates: list[str] = []
    if os.environ.get("LOCAL_BIGQUERY_PYTHON"):
        candidates.append(os.environ["LOCAL_BIGQUERY_PYTHON"])
    if sys.version_info[:2] == (3, 13):
        candidates.append(sys.executable)
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += [str(p) for p in sorted(pyenv_root.glob(f"versions/{BQ_PYTHON_VERSION}.*/bin/python3"))]
    on_path = shutil.which(f"python{BQ_PYTHON_VERSION}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if _is_python313(candidate):
            return candidate
    raise failure(
        "bigquery",
        f"no working Python {BQ_PYTHON_VERSION} (tried $LOCAL_BIGQUERY_PYTHON, "
        f"{pyenv_root}/versions/{BQ_PYTHON_VERSION}.*, python{BQ_PYTHON_VERSION} on PATH: {candidates}); "
        "local-bigquery needs it",
        [f"python{BQ_PYTHON_VERSION}"],
        None,
    )


# Runs inside the emulator venv: copies the DuckDB extensions shipped as PyPI packages to where
# DuckDB looks for them ($HOME/.duckdb/extensions/<version>/<platform>), then loads them with
# auto-install off and HOME set as for the emulator, which proves they work without network.
_COPY_EXTENSIONS = r"""
import pathlib, shutil, sys, duckdb, duckdb_extension_ducklake
site = pathlib.Path(duckdb_extension_ducklake.__file__).resolve().parent.parent
platform = duckdb.execute("PRAGMA platform").fetchone()[0]
home = pathlib.Path(sys.argv[1])
names = []
for ext in sorted(site.glob("duckdb_extension_*/extensions/*/*.duckdb_extension")):
    target = home / ".duckdb" / "extensions" / ext.parent.name / platform
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ext, target / ext.name)
    names.append(ext.name.split(".")[0])
con = duckdb.connect(config={"autoinstall_known_extensions": False})
for name in names:
    con.execute(f"LOAD {name}")
print("duckdb", duckdb.__version__, platform, "extensions loaded:", ", ".join(names))
"""


def bigquery_env() -> dict[str, str]:
    """Environment for the emulator process: its own HOME, so DuckDB finds the copied extensions."""
    return dict(os.environ, HOME=str(BQ_HOME))


def _pip_env() -> dict[str, str]:
    return dict(os.environ, PIP_CACHE_DIR=str(PIP_CACHE), PIP_DISABLE_PIP_VERSION_CHECK="1")


def ensure_bigquery_venv() -> Path:
    """The local-bigquery venv (.cache/bq-venv) plus its DuckDB extensions; returns its bin dir."""
    stamp = BQ_VENV / ".stamp"
    python = find_python313()
    fingerprint = _fingerprint([BQ_REQUIREMENTS], _tool_version([python, "--version"]), platform.machine())
    bin_dir = BQ_VENV / "bin"

    def install() -> None:
        log = INSTALL_LOG_DIR / "bigquery-venv.log"
        # A venv cannot be moved after creation, so it is rebuilt in place; no stamp until the end.
        shutil.rmtree(BQ_VENV, ignore_errors=True)
        run_step("bigquery", [python, "-m", "venv", str(BQ_VENV)], log_path=log, timeout=300)
        env = _pip_env()
        run_step(
            "bigquery",
            [str(bin_dir / "python"), "-m", "pip", "install", "-q", "-r", str(BQ_REQUIREMENTS)],
            log_path=log,
            env=env,
            timeout=900,
        )
        run_step(
            "bigquery",
            [str(bin_dir / "python"), "-c", _COPY_EXTENSIONS, str(BQ_HOME)],
            log_path=log,
            env=bigquery_env(),
            timeout=300,
        )

    _install_once("bigquery-install", stamp, fingerprint, install)
    return bin_dir


# Flink: the distribution PyPI ships inside PyFlink. `apache-flink-libraries` holds the jars (lib/, opt/, plugins/),
# `apache-flink` the scripts and default conf (bin/, conf/). The minor version is the one Beam's Flink runner here is
# built for (pipelines/local_run/jars.py FLINK_JAVA: beam-runners-flink-1.16).
FLINK_DIST_VERSION = "1.16.3"
FLINK_HOME = CACHE_DIR / "flink" / FLINK_DIST_VERSION


def ensure_flink_distribution() -> Path:
    """A Flink distribution (FLINK_HOME: bin/, conf/, lib/flink-dist-*.jar, ...) in .cache/flink/<version>."""
    stamp = FLINK_HOME / ".stamp"
    fingerprint = _fingerprint([], FLINK_DIST_VERSION, "home=bin,conf,lib,opt,plugins")

    def install() -> None:
        log = INSTALL_LOG_DIR / "flink-pip.log"
        staging = FLINK_HOME.with_name(f"{FLINK_DIST_VERSION}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        env = _pip_env()
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target"]
        run_step(
            "flink",
            [*pip, str(staging / "jars"), f"apache-flink-libraries=={FLINK_DIST_VERSION}"],
            log_path=log,
            env=env,
            timeout=900,
        )
        # PyFlink 1.16's C extensions do not build on Python >= 3.10 and only its scripts and conf are needed: the
        # wheel for CPython 3.9 is unpacked (never imported); the platform tag only picks which wheel file.
        run_step(
            "flink",
            [
                *pip,
                str(staging / "scripts"),
                "--only-binary=:all:",
                "--implementation=cp",
                "--python-version=3.9",
                "--platform=manylinux2014_x86_64",
                "--platform=manylinux1_x86_64",
                f"apache-flink=={FLINK_DIST_VERSION}",
            ],
            log_path=log,
            env=env,
            timeout=900,
        )
        home = staging / "home"
        home.mkdir()
        for part, names in (("jars", ("lib", "opt", "plugins")), ("scripts", ("bin", "conf"))):
            for name in names:
                (staging / part / "pyflink" / name).rename(home / name)
        (staging / "jars" / "pyflink" / "bin" / "bash-java-utils.jar").rename(home / "bin" / "bash-java-utils.jar")
        if not list((home / "lib").glob(f"flink-dist-{FLINK_DIST_VERSION}.jar")):
            raise failure("flink", f"no flink-dist-{FLINK_DIST_VERSION}.jar in the installed libraries", None, log)
        for script in (home / "bin").iterdir():
            if script.suffix != ".jar":
                script.chmod(0o755)
        shutil.rmtree(FLINK_HOME, ignore_errors=True)
        home.rename(FLINK_HOME)
        shutil.rmtree(staging, ignore_errors=True)

    _install_once("flink-install", stamp, fingerprint, install)
    return FLINK_HOME
