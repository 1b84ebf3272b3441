"""Running a built pipeline to its end: Ctrl-C, and the watch on a streaming job's source.

- Ctrl-C cancels the job on its runner (the direct runner's executor, Prism's or Flink's job service: a job on a
  Flink cluster is cancelled there) and returns the counters so far, so the CLI can print the summary so far. The
  gRPC streams Beam's result keeps open end with ``CANCELLED`` when the job is cancelled; that is the expected end,
  not an error, and is not printed.
- A streaming job whose source goes away keeps running: its reader retries (KafkaIO's consumer reconnects; the
  direct runner's Pub/Sub reader is made to, ``runners.keep_pulling_through_pubsub_outages``). Meanwhile the source
  is checked every ``WATCH_INTERVAL_S`` with the start-up check, and a warning says what is wrong, at most once per
  interval, until the source answers again.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass, field

import apache_beam as beam
from apache_beam.runners.runner import PipelineResult

from pipelines import runners
from pipelines.spec import LaunchSpec
from pipelines.startup_check import bounded, source_problem
from pipelines.summary import counters
from transforms.io import KAFKA, PUBSUB, scheme_of

_LOG = logging.getLogger(__name__)

WATCH_INTERVAL_S = 30.0  # how often a running streaming job's source is checked, and the most it warns
_METRICS_TIMEOUT_S = 10.0


@dataclass
class JobOutcome:
    counters: dict[str, int] = field(default_factory=dict)
    interrupted: bool = False  # stopped by Ctrl-C: the counters are those so far


def run_until_done(pipeline: beam.Pipeline, spec: LaunchSpec) -> JobOutcome:
    """Runs ``pipeline`` until it ends or Ctrl-C stops it. A failed job raises, as Beam reports it."""
    try:
        result = pipeline.run()  # the FnApiRunner runs a batch job right here
    except KeyboardInterrupt:
        return JobOutcome(interrupted=True)
    waiter = _Waiter(result)
    watch = SourceWatch(spec) if spec.streaming and scheme_of(spec.source.given) in (KAFKA, PUBSUB) else None
    # Beam's job server wrapper (Prism, Flink) stops the job server on SIGINT, which leaves a job on a Flink cluster
    # running and the metrics unreadable: while waiting, Ctrl-C only interrupts, and the job is cancelled here.
    beams_handler = _plain_keyboard_interrupt()
    try:
        while not waiter.finished(timeout_s=1.0):
            if watch is not None:
                watch.tick()
    except KeyboardInterrupt:
        so_far = _counters_so_far(result)
        _cancel(result, waiter, spec)
        return JobOutcome(so_far, interrupted=True)
    finally:
        if beams_handler is not None:
            signal.signal(signal.SIGINT, beams_handler)
    waiter.raise_failure()
    return JobOutcome(counters(result))


def _plain_keyboard_interrupt():
    """SIGINT raises KeyboardInterrupt and does nothing else; returns the handler it replaced (None: not replaced)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.default_int_handler)


class _Waiter:
    """``result.wait_until_finish()`` in a daemon thread, so the main thread stays free for Ctrl-C and the watch."""

    def __init__(self, result: PipelineResult) -> None:
        self._result = result
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._wait, name="wait-until-finish", daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        try:
            self._result.wait_until_finish()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread (or dropped when we cancelled)
            self._failure = exc

    def finished(self, timeout_s: float) -> bool:
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure


def _counters_so_far(result: PipelineResult) -> dict[str, int]:
    values: list[dict[str, int]] = []

    def query() -> None:
        values.append(counters(result))

    thread = threading.Thread(target=query, name="metrics-so-far", daemon=True)
    thread.start()
    thread.join(_METRICS_TIMEOUT_S)
    return values[0] if values else {}


def _cancel(result: PipelineResult, waiter: _Waiter, spec: LaunchSpec) -> None:
    """Cancels the job (on a Flink cluster also through Flink's REST API: Beam's job server cancels only its own
    invocation); the streams Beam's threads read end with CANCELLED (or UNAVAILABLE once the runner has let go of the
    job), which is the expected end here and is not reported."""
    _quiet_ended_streams()
    try:
        result.cancel()
    except Exception as exc:  # noqa: BLE001 - a job that ended meanwhile cannot be cancelled: nothing to do
        _LOG.debug("cancel: %s", exc)
    try:
        runners.cancel_on_flink_cluster(spec.runner)
    except OSError as exc:
        _LOG.warning("could not cancel the job on the Flink cluster at %s: %s", spec.runner.flink_master, exc)
    waiter.finished(timeout_s=_METRICS_TIMEOUT_S)


def _is_ended_stream(exc: BaseException | None) -> bool:
    import grpc

    ended = (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    return isinstance(exc, grpc.RpcError) and getattr(exc, "code", lambda: None)() in ended


def _quiet_ended_streams() -> None:
    """From now on (the job is being cancelled), a thread that dies of an ended gRPC stream says nothing."""
    previous = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if _is_ended_stream(args.exc_value):
            return
        previous(args)

    threading.excepthook = hook
    # Beam's job service and worker threads log the same ends through logging before they die.
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WithoutEndedStreams())


class _WithoutEndedStreams(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        text = record.getMessage()
        expected = ("StatusCode.CANCELLED", "StatusCode.UNAVAILABLE", "pipeline canceled")  # the last: Prism's
        return not _is_ended_stream(exc) and not any(words in text for words in expected)


class SourceWatch:
    """Checks a running streaming job's source every ``interval_s``; warns while it does not answer."""

    def __init__(self, spec: LaunchSpec, interval_s: float = WATCH_INTERVAL_S) -> None:
        self._spec = spec
        self._interval_s = interval_s
        self._next = time.monotonic() + interval_s
        self._down_since: float | None = None
        self._checking: threading.Thread | None = None
        self._problem: list[str | None] = []

    def tick(self) -> None:
        """Called often; starts a check when one is due and reports the last one's answer."""
        now = time.monotonic()
        if self._checking is not None and not self._checking.is_alive():
            self._report(self._problem[-1] if self._problem else None, now)
            self._checking = None
        if self._checking is None and now >= self._next:
            self._next = now + self._interval_s
            self._checking = threading.Thread(target=self._check, name="source-watch", daemon=True)
            self._checking.start()

    def _check(self) -> None:
        self._problem.append(bounded(lambda: source_problem(self._spec), self._interval_s))

    def _report(self, problem: str | None, now: float) -> None:
        uri = self._spec.source.given
        if problem is None:
            if self._down_since is not None:
                _LOG.warning("source %s answers again after %.0f s", uri, now - self._down_since)
            self._down_since = None
            return
        if self._down_since is None:
            self._down_since = now
        _LOG.warning(
            "source %s has not answered for %.0f s: %s; the job keeps running and its reader keeps retrying "
            "(checked again every %.0f s)",
            uri,
            max(now - self._down_since, self._interval_s),
            problem,
            self._interval_s,
        )
