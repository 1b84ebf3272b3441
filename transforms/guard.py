"""Poison records: a record that makes a per-record step throw becomes a dead letter, and the stream goes on.

Without this, an exception in a DoFn fails its bundle; the runner retries the bundle, the record throws again, and
a streaming job retries forever: one poison message blocks its Pub/Sub subscription or Kafka partition (the direct
runner gives up after four attempts and fails the whole job). Parse and validate already turn every *expected*
fault into a precise error code; this catches the unexpected ones (a bug, a library that chokes on a value) in the
steps past them, so each record still gets exactly one outcome.

Two ways to guard a step, both emitting dead letters on the ``dead_letter`` output (declare it with
``.with_outputs(dl.DEAD_LETTER_TAG, main=...)`` and flatten it into the dead letters):

- ``@dead_letter_on_error(stage)`` on a DoFn's ``process`` (state, timers and ``DoFn.*Param`` arguments keep
  working: Beam reads the wrapped signature);
- ``guarded_map(fn, stage)`` instead of ``beam.Map(fn)``.

The dead letter: ``error_code=processing_error``, ``stage`` = the step, ``error_message`` = the step's name, the
exception's type and message; ``payload``, ``source`` and ``source_metadata`` of the record(s) the element carries
(an element that is a group of records, such as a GroupByKey's output, gives one dead letter per record). A step
either emits all its outputs for an element or, if it throws, none and the dead letters: never both.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

import apache_beam as beam

from transforms import dead_letter as dl
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.records import Event, SourceRecord

_LOG = logging.getLogger(__name__)

# How much of an element without a record (an aggregate, a key) the dead letter describes.
_ELEMENT_REPR_CHARS = 300


def records_in(element: Any) -> list[Event | SourceRecord]:
    """The records an element carries: itself, the parts of a (key, value) pair, the values of a group."""
    if isinstance(element, (Event, SourceRecord)):  # NamedTuples: checked before the generic tuple case
        return [element]
    if isinstance(element, beam.window.TimestampedValue):
        return records_in(element.value)
    if isinstance(element, (str, bytes, bytearray, dict)) or not isinstance(element, Iterable):
        return []
    found: list[Event | SourceRecord] = []
    for item in element:
        found.extend(records_in(item))
    return found


def processing_error_dead_letters(element: Any, stage: str, step: str, exc: Exception) -> list[dict[str, Any]]:
    """One ``processing_error`` dead letter per record in ``element`` (one describing it if it holds none)."""
    beam.metrics.Metrics.counter(METRICS_NAMESPACE, "processing_errors").inc()
    _LOG.warning("%s: dead-lettering a record that raised %s", step, type(exc).__name__, exc_info=exc)
    reason = dl.Rejection(dl.PROCESSING_ERROR, None, f"{step} failed: {dl.exception_text(exc)}"[: dl.MAX_MESSAGE_CHARS])
    records = records_in(element)
    if records:
        return [dl.dead_letter(reason, r.payload, r.source, r.metadata, stage) for r in records]
    return [dl.dead_letter(reason, None, None, {"element": _describe(element)}, stage)]


def _describe(element: Any) -> str:
    try:
        text = repr(element)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not hide the original failure
        text = f"<{type(element).__name__}: repr failed with {type(exc).__name__}>"
    return dl.without_addresses(text)[:_ELEMENT_REPR_CHARS]


def _tagged(rows: list[dict[str, Any]]) -> list[beam.pvalue.TaggedOutput]:
    return [beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row) for row in rows]


def dead_letter_on_error(stage: str, step: str | None = None) -> Callable:
    """Decorator for ``DoFn.process``: an exception for one element becomes its dead letters (``stage``).

    ``step`` names the step in the message (default: the DoFn's class name). Outputs are collected before any is
    emitted, so an element that throws half-way emits nothing but its dead letters.
    """

    def decorate(process: Callable) -> Callable:
        @functools.wraps(process)  # Beam inspects the wrapped signature (state, timers, params)
        def guarded(self: beam.DoFn, element: Any, *args: Any, **kwargs: Any) -> list[Any]:
            try:
                outputs = process(self, element, *args, **kwargs)
                return [] if outputs is None else list(outputs)
            except Exception as exc:  # noqa: BLE001 - any failure of one record must not stop the stream
                return _tagged(processing_error_dead_letters(element, stage, step or type(self).__name__, exc))

        return guarded

    return decorate


class GuardedMap(beam.DoFn):
    """``beam.Map(fn)`` whose failures are dead letters (``stage``) on the ``dead_letter`` output."""

    def __init__(self, fn: Callable[[Any], Any], stage: str, step: str | None = None) -> None:
        self._fn = fn
        self._stage = stage
        self._step = step or getattr(fn, "__name__", type(fn).__name__)

    def process(self, element: Any) -> list[Any]:
        try:
            return [self._fn(element)]
        except Exception as exc:  # noqa: BLE001 - any failure of one record must not stop the stream
            return _tagged(processing_error_dead_letters(element, self._stage, self._step, exc))


def guarded_map(
    fn: Callable[[Any], Any],
    stage: str,
    output_type: Any = None,
    main: str = "main",
    label: str = "Apply",
    step: str | None = None,
) -> beam.PTransform:
    """Like ``beam.Map(fn)``, with outputs ``main`` and ``dead_letter`` (failures, as dead letters).

    A step with two outputs is a composite: the ParDo inside is labelled ``label`` (explicit, so the Dataflow label
    does not depend on a class name; docs/updating-jobs.md).
    """
    pardo = beam.ParDo(GuardedMap(fn, stage, step))
    pardo.label = label
    if output_type is not None:
        pardo = pardo.with_output_types(output_type)
    return pardo.with_outputs(dl.DEAD_LETTER_TAG, main=main)
