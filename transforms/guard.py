"""Poison records: a record that makes a step throw becomes a dead letter, and the stream goes on.

Without this, an exception in a DoFn fails its bundle; the runner retries the bundle, the record throws again, and
a streaming job retries forever: one poison message blocks its Pub/Sub subscription or Kafka partition (the direct
runner gives up after four attempts and fails the whole job). Parse and validate already turn every *expected*
fault into a precise error code; this catches the unexpected ones (a bug, a library that chokes on a value).

One mechanism for every step, which all work on batches (``guarded``): the step runs on the whole batch; if that
throws, it runs again record by record, and only the records that throw on their own become ``processing_error``
dead letters, with their bytes, source and metadata and ``stage`` naming the step. A step's function therefore must
not leave anything half done when it throws (each step computes its result first and commits it last), so that
retrying a part of the batch counts nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from transforms import dead_letter as dl
from transforms.records import SourceRecord

_LOG = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


def processing_error_dead_letter(record: SourceRecord, stage: str, step: str, exc: Exception) -> dict[str, Any]:
    """The ``processing_error`` dead letter of a record a step threw on."""
    _LOG.warning("%s: dead-lettering a record that raised %s", step, type(exc).__name__, exc_info=exc)
    reason = dl.Rejection(dl.PROCESSING_ERROR, None, f"{step} failed: {dl.exception_text(exc)}"[: dl.MAX_MESSAGE_CHARS])
    return dl.dead_letter(reason, record.payload, record.source, record.metadata, stage)


def guarded(
    step_fn: Callable[[Sequence[Item]], Result],
    items: Sequence[Item],
    record_of: Callable[[Item], SourceRecord],
    stage: str,
    step: str,
    one_fn: Callable[[Sequence[Item]], Result] | None = None,
) -> tuple[list[Result], list[dict[str, Any]]]:
    """``step_fn(items)`` -> ([its result], []); if it throws, each item alone (``one_fn`` if given, else
    ``step_fn([item])``) -> (the results of the items that did not throw, the dead letters of those that did)."""
    try:
        return [step_fn(items)], []
    except Exception:  # noqa: BLE001 - one record must not fail its batch: find it, record by record
        pass
    alone = one_fn or step_fn
    results: list[Result] = []
    dead_letters: list[dict[str, Any]] = []
    for item in items:
        try:
            results.append(alone([item]))
        except Exception as exc:  # noqa: BLE001 - that record's processing_error dead letter
            dead_letters.append(processing_error_dead_letter(record_of(item), stage, step, exc))
    return results, dead_letters
