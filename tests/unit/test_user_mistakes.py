"""A user's mistakes, tried as a user would make them: every option of the table with a bad value, and what only the
start-up check can find (no such file, no broker, no credentials for Google, a service that does not answer).

Each ends the CLI with exit code 2, one ``error:`` line naming the option and what was tried, and the usage line: no
traceback, nothing on stdout, within a bounded time. The checks against real services (a missing topic,
subscription or table, a wrong schema, SASL) are in ``tests/integration/test_startup_check.py``.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pipelines import startup_check
from pipelines.options import ALL_OPTIONS, EXAMPLE_SECRET_ENV
from pipelines.streaming_analytics import main

SAFE = {
    "--sink": "--sink=/nonexistent-dir-for-tests/agg",
    "--dead_letter_sink": "--dead_letter_sink=/nonexistent-dir-for-tests/dlq",
}

CASES = [(option.name, bad, context) for option in ALL_OPTIONS for bad, context in option.bad_values()]


@pytest.fixture(autouse=True)
def _no_google_and_example_secrets(monkeypatch, tmp_path):
    for name, value in EXAMPLE_SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("PUBSUB_EMULATOR_HOST", "BIGQUERY_EMULATOR_HOST", "BIGQUERY_EMULATOR_GRPC_HOST"):
        monkeypatch.delenv(name, raising=False)
    # No Application Default Credentials: no key file, no gcloud configuration.
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))


def _one_error_line(argv: list[str], capsys) -> str:
    given = {a.split("=", 1)[0] for a in argv}
    argv = [*argv, *(flag for name, flag in SAFE.items() if name not in given)]
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2, captured.err
    assert err[0].startswith("error: ") and err[1].startswith("usage: ") and "--help" in err[1]
    assert "Traceback" not in captured.err and captured.out == ""
    return err[0]


def test_every_option_has_bad_values_to_try():
    assert [o.name for o in ALL_OPTIONS if not o.bad_values()] == []


@pytest.mark.parametrize(("name", "bad", "context"), CASES, ids=[f"{n}={b!r}" for n, b, _ in CASES])
def test_every_option_with_a_bad_value_is_one_line_naming_it(name, bad, context, capsys):
    line = _one_error_line([*context, f"--{name}={bad}"], capsys)
    assert line.startswith(f"error: --{name}"), line


# ---- what only the start-up check finds ---------------------------------------------------------------------------


def test_files_that_do_not_exist(tmp_path, capsys):
    line = _one_error_line(["--source=/nonexistent/*.jsonl"], capsys)
    assert line == "error: --source: no file matches /nonexistent/*.jsonl"
    (tmp_path / "dir.jsonl").mkdir()  # a directory is not a file
    assert "no file matches" in _one_error_line([f"--source={tmp_path}/*.jsonl"], capsys)
    assert "no file matches" in _one_error_line([f"--source=file://{tmp_path}/none.jsonl"], capsys)


def test_a_sink_directory_that_cannot_be_made(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _one_error_line(["--source=synthetic://?events=5", f"--sink={blocker}/out/aggregates"], capsys)
    assert line.startswith("error: --sink: cannot write files under") and "not a directory" in line


def test_no_kafka_broker_answers(capsys):
    line = _one_error_line(["--source=kafka://127.0.0.1:1/events", "--runner=PrismRunner"], capsys)
    assert line == (
        "error: --source: no Kafka broker answered (127.0.0.1:1: connection refused) "
        "(tried kafka://127.0.0.1:1/events over PLAINTEXT)"
    )
    line = _one_error_line(["--source=synthetic://?rate=5", "--dead_letter_sink=kafka://127.0.0.1:1/dlq"], capsys)
    assert line.startswith("error: --dead_letter_sink: no Kafka broker answered")


def _server(answer: bytes | None) -> tuple[socket.socket, int]:
    """A TCP server that is no Kafka broker: it answers ``answer`` and closes, or says nothing at all."""
    server = socket.create_server(("127.0.0.1", 0))
    held = []

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            if answer is None:
                held.append(connection)  # silent, kept open
            else:
                connection.recv(1024)
                connection.sendall(answer)
                connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, server.getsockname()[1]


def test_something_else_on_the_kafka_port(capsys):
    server, port = _server(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        line = _one_error_line([f"--source=kafka://127.0.0.1:{port}/events", "--runner=PrismRunner"], capsys)
    finally:
        server.close()
    assert line.startswith("error: --source: no Kafka broker answered") and f"127.0.0.1:{port}" in line


def test_a_broker_that_never_answers_is_given_up_on_in_bounded_time(monkeypatch, capsys):
    monkeypatch.setattr(startup_check, "_CALL_TIMEOUT_S", 1.0)
    server, port = _server(None)
    started = time.monotonic()
    try:
        line = _one_error_line([f"--source=kafka://127.0.0.1:{port}/events", "--runner=PrismRunner"], capsys)
    finally:
        server.close()
    assert "no answer (timed out)" in line
    assert time.monotonic() - started < 10


def test_a_check_that_hangs_is_bounded():
    assert startup_check.bounded(lambda: time.sleep(5), timeout_s=0.2) == "no answer within 0 s"
    assert startup_check.bounded(lambda: None, timeout_s=5) is None
    assert startup_check.bounded(lambda: 1 / 0, timeout_s=5).startswith("the check failed: division by zero")


def test_google_endpoints_without_credentials(capsys):
    line = _one_error_line(["--source=pubsub://projects/myproj/subscriptions/nosuchsub", "--streaming"], capsys)
    assert line.startswith(
        "error: --source: pubsub://projects/myproj/subscriptions/nosuchsub is on Google Pub/Sub: no Google "
        "credentials found"
    )
    assert line.endswith("and PUBSUB_EMULATOR_HOST (an emulator) is not set")
    line = _one_error_line(
        ["--source=synthetic://?events=5", "--dead_letter_sink=pubsub://projects/my-project/topics/dlq"], capsys
    )
    assert line.startswith("error: --dead_letter_sink: pubsub://projects/my-project/topics/dlq is on Google Pub/Sub")
    line = _one_error_line(["--source=synthetic://?events=5", "--sink=bigquery://my-project.analytics.agg"], capsys)
    assert line.startswith("error: --sink: bigquery://my-project.analytics.agg is on Google BigQuery: no Google")
    line = _one_error_line(["--source=gs://my-bucket/events/*.jsonl"], capsys)
    assert line.startswith("error: --source: gs://my-bucket/events/*.jsonl is on Google Cloud Storage: no Google")


def test_emulators_that_do_not_answer(monkeypatch, capsys):
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:1")
    line = _one_error_line(["--source=pubsub://projects/my-project/subscriptions/events"], capsys)
    assert line.startswith("error: --source: the Pub/Sub emulator at 127.0.0.1:1 (PUBSUB_EMULATOR_HOST) did not answer")
    line = _one_error_line(
        [
            "--source=synthetic://?events=5",
            "--sink=bigquery://my-project.analytics.agg",
            "--bigquery_endpoint=http://127.0.0.1:1",
        ],
        capsys,
    )
    assert line.startswith("error: --sink: the BigQuery emulator at http://127.0.0.1:1 did not answer")
