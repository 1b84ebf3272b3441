"""What a runner's PROCESS environment runs to start an SDK worker: Beam's container boot, minus Docker.

A portable runner (Prism, Flink) starts a worker for a PROCESS environment as ``COMMAND --id=ID
--provision_endpoint=HOST:PORT [...]``. Beam's own boot programs live in its Docker images (``/opt/apache/beam/boot``)
and assume that file system; these do the same work on this machine:

- ask the runner's provision service for the worker's endpoints and pipeline options;
- ``java``: exec ``java -cp <cached lib>/* FnHarness`` (the classpath ``pipelines/local_run/jars.py`` fetched);
- ``python``: exec ``python -m apache_beam.runners.worker.sdk_worker_main`` with this interpreter, the project on
  ``PYTHONPATH`` (so a TaskManager can run the pipeline's Python code without Docker).

Staged artifacts are not fetched: the cached lib directory and this checkout already hold everything the workers need.

    python -m pipelines.local_run.boot java NAME --id=ID --provision_endpoint=HOST:PORT    # NAME: a JavaSet (jars.py)
    python -m pipelines.local_run.boot python --id=ID --provision_endpoint=HOST:PORT
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON_MAIN = "apache_beam.runners.worker.sdk_worker_main"
JAVA_WORKER_HEAP = os.environ.get("BEAM_JAVA_WORKER_HEAP", "768m")


def _arguments(argv: Sequence[str]) -> dict[str, str]:
    # Prism passes --id='ID' with the quotes inside the argument (no shell strips them).
    args = dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)
    return {key: value.strip("'\"") for key, value in args.items()}


def _provision(argv: Sequence[str]) -> tuple[str, Any]:
    """(worker id, ProvisionInfo) from the runner's provision service."""
    import grpc
    from apache_beam.portability.api import beam_provision_api_pb2, beam_provision_api_pb2_grpc

    args = _arguments(argv)
    worker_id, endpoint = args["id"], args["provision_endpoint"]
    with grpc.insecure_channel(endpoint) as channel:
        stub = beam_provision_api_pb2_grpc.ProvisionServiceStub(channel)
        info = stub.GetProvisionInfo(
            beam_provision_api_pb2.GetProvisionInfoRequest(), metadata=[("worker_id", worker_id)], timeout=60
        ).info
    return worker_id, info


def _worker_environment(worker_id: str, info: Any) -> dict[str, str]:
    """The environment variables both SDK harnesses read (the names Beam's container boot sets)."""
    from apache_beam.portability.api import endpoints_pb2
    from google.protobuf import json_format, text_format

    def descriptor(url: str) -> str:
        return text_format.MessageToString(endpoints_pb2.ApiServiceDescriptor(url=url), as_one_line=True)

    env = dict(os.environ)
    env.update(
        HARNESS_ID=worker_id,
        WORKER_ID=worker_id,
        PIPELINE_OPTIONS=json_format.MessageToJson(info.pipeline_options),
        LOGGING_API_SERVICE_DESCRIPTOR=descriptor(info.logging_endpoint.url),
        CONTROL_API_SERVICE_DESCRIPTOR=descriptor(info.control_endpoint.url),
        RUNNER_CAPABILITIES=" ".join(info.runner_capabilities),
    )
    if info.status_endpoint.url:
        env["STATUS_API_SERVICE_DESCRIPTOR"] = descriptor(info.status_endpoint.url)
    return env


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    return str(Path(java_home) / "bin" / "java") if java_home else (shutil.which("java") or "java")


def boot_java(lib: Path, argv: Sequence[str]) -> None:
    """Replaces this process with a Beam Java SDK worker on the jars of ``lib``."""
    worker_id, info = _provision(argv)
    java = java_executable()
    command = [java, f"-Xmx{JAVA_WORKER_HEAP}", "-XX:+UseSerialGC"]
    command += [f"-javaagent:{jar}" for jar in sorted(lib.glob("jamm-*.jar"))]
    command += ["-cp", f"{lib}/*", "org.apache.beam.fn.harness.FnHarness"]
    os.execve(java, command, _worker_environment(worker_id, info))


def boot_python(argv: Sequence[str]) -> None:
    """Replaces this process with a Beam Python SDK worker running this interpreter and this checkout's code."""
    worker_id, info = _provision(argv)
    env = _worker_environment(worker_id, info)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    # Beam's boot gives each worker a scratch directory (staged files, profiles); nothing is staged here.
    env["SEMI_PERSISTENT_DIRECTORY"] = tempfile.mkdtemp(prefix=f"beam-worker-{worker_id}-")
    os.execve(sys.executable, [sys.executable, "-m", PYTHON_MAIN], env)


def python_boot_command() -> Path:
    """A script a PROCESS environment can name as its command (written once into .cache/): boots a Python worker."""
    from pipelines.local_run.jars import CACHE_DIR

    # One script per checkout and interpreter: checkouts sharing a cache (SERVICES_CACHE_DIR) never run each
    # other's code.
    owner = hashlib.sha256(f"{REPO_ROOT}\0{sys.executable}".encode()).hexdigest()[:12]
    script = CACHE_DIR / f"python-boot-{owner}"
    text = (
        "#!/bin/sh\n"
        "# Generated by pipelines/local_run/boot.py: starts a Beam Python SDK worker (a PROCESS environment's\n"
        "# command).\n"
        f"PYTHONPATH={REPO_ROOT}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} -m pipelines.local_run.boot "
        'python "$@"\n'
    )
    if not script.exists() or script.read_text() != text:
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        partial = script.with_name(f"python-boot.{os.getpid()}")
        partial.write_text(text)
        partial.chmod(0o755)
        partial.replace(script)
    return script


def main(argv: Sequence[str]) -> int:
    if len(argv) >= 2 and argv[0] == "java":
        from pipelines.local_run.jars import java_set

        boot_java(java_set(argv[1]).lib, argv[2:])
    elif argv and argv[0] == "python":
        boot_python(argv[1:])
    print(__doc__.split("\n\n")[-1], file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
