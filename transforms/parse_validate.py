"""Parsing and validating batches of records: the fast path first, the reference for every other record.

``ParseEvents`` / ``ValidateEvents`` take ``RecordBatch``es. The fast path (``fast_json``: the C scanner, then
msgspec) accepts the plainly valid JSON records of a batch exactly as the reference would; the reference parser
(``parse.parse_record``) and validator (``validate.EventValidator``) decide every other record, so dead letters
carry the same code, field and message whichever path saw the record. A batch that makes a step throw is retried
record by record with the reference alone (``guard.guarded``): only records that throw on their own become
``processing_error`` dead letters.

``BatchParser`` is plain Python: the benchmark's plain loop and the fuzz tests use it too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import apache_beam as beam

from transforms import dead_letter as dl
from transforms import metrics
from transforms.dead_letter import Rejection
from transforms.fast_json import FastJsonValidator, Valid, valid_of
from transforms.guard import guarded
from transforms.parse import FORMAT_JSON, decoder_for, parse_record
from transforms.records import RecordBatch
from transforms.timefmt import now_us
from transforms.validate import DEFAULT_MAX_CLOCK_SKEW_S, EventValidator


class ParsedBatch(NamedTuple):
    batch: RecordBatch
    valid: list[Valid]  # accepted by the fast path
    decoded: list[tuple[int, dict[str, Any]]]  # decoded by the reference parser, for the reference validator


class ValidBatch(NamedTuple):
    batch: RecordBatch
    valid: list[Valid]  # in batch order


def _position(valid: Valid) -> int:
    return valid[0]


class BatchParser:
    """Parse and validate a ``RecordBatch``: fast path first, the reference parser and validator for the rest."""

    def __init__(
        self,
        fmt: str = FORMAT_JSON,
        key_field: str = "page",
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        max_payload_bytes: int = 1 << 20,
        clock: Callable[[], int] = now_us,
        fast_path: str = "auto",
    ) -> None:
        """``fast_path``: which JSON fast path implementation (``fast_json.IMPLEMENTATIONS``; benchmarks compare)."""
        self._decode = decoder_for(fmt)
        self._max_payload_bytes = max_payload_bytes
        self._validator = EventValidator(key_field, max_clock_skew_s, clock)
        self._fast = (
            FastJsonValidator(key_field, max_clock_skew_s, max_payload_bytes, clock, fast_path)
            if fmt == FORMAT_JSON
            else None
        )

    def parse(self, batch: RecordBatch) -> tuple[ParsedBatch, list[tuple[int, Rejection]]]:
        """The whole batch: (what the fast path accepted and what the reference decoded, the rejections)."""
        if self._fast is not None and batch.decoded is None:
            valid, rest = self._fast.validate_batch(batch.payloads)
        else:
            valid, rest = [], range(len(batch.payloads))
        parsed, rejected = self.parse_with_reference(batch, rest)
        return parsed._replace(valid=valid), rejected

    def parse_with_reference(
        self, batch: RecordBatch, positions: Sequence[int]
    ) -> tuple[ParsedBatch, list[tuple[int, Rejection]]]:
        """The records at ``positions``, by the reference parser alone."""
        decoded: list[tuple[int, dict[str, Any]]] = []
        rejected: list[tuple[int, Rejection]] = []
        for i in positions:
            result = parse_record(batch.record(i), self._decode, self._max_payload_bytes)
            if type(result) is Rejection:
                rejected.append((i, result))
            else:
                decoded.append((i, result))
        return ParsedBatch(batch, [], decoded), rejected

    def validate(self, parsed: ParsedBatch, arrival_us: int = 0) -> tuple[ValidBatch, list[tuple[int, Rejection]]]:
        """The fast path's records as they are, the reference's through the validator; batch order."""
        checked, rejected = self.validate_with_reference(parsed.batch, parsed.decoded, arrival_us)
        return ValidBatch(parsed.batch, merge_valid(parsed.valid, checked)), rejected

    def validate_with_reference(
        self, batch: RecordBatch, decoded: Sequence[tuple[int, dict[str, Any]]], arrival_us: int = 0
    ) -> tuple[list[Valid], list[tuple[int, Rejection]]]:
        """Decoded records (position, object) through the reference validator: (the valid ones, the rejections).
        ``arrival_us`` stands for each record's arrival when the batch has none of its own."""
        valid: list[Valid] = []
        rejected: list[tuple[int, Rejection]] = []
        arrivals = batch.arrivals
        for i, obj in decoded:
            result = self._validator.validate(obj, batch.record(i), arrivals[i] if arrivals else arrival_us)
            if type(result) is Rejection:
                rejected.append((i, result))
            else:
                valid.append(valid_of(i, result))
        return valid, rejected


def merge_valid(fast: list[Valid], reference: list[Valid]) -> list[Valid]:
    """Both paths' valid records in batch order."""
    if not reference:
        return fast
    if not fast:
        return reference
    return sorted(fast + reference, key=_position)


def dead_letters(batch: RecordBatch, rejected: list[tuple[int, Rejection]], stage: str) -> Iterator[dict[str, Any]]:
    for i, rejection in rejected:
        record = batch.record(i)
        yield dl.dead_letter(rejection, record.payload, record.source, record.metadata, stage)


def _tagged(rows: Iterator[dict[str, Any]] | list[dict[str, Any]]) -> Iterator[beam.pvalue.TaggedOutput]:
    for row in rows:
        yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)


class _ParseDoFn(beam.DoFn):
    def __init__(self, fmt: str, key_field: str, max_clock_skew_s: float, max_payload_bytes: int, kind: str) -> None:
        self._args = (fmt, key_field, max_clock_skew_s, max_payload_bytes)
        self._read = metrics.counter(metrics.RECORDS_READ)
        self._read_from = metrics.counter(metrics.records_read_from(kind)) if kind else None

    def setup(self) -> None:
        self._parser = BatchParser(*self._args)

    def process(self, batch: RecordBatch) -> Iterator[Any]:
        count = len(batch.payloads)
        self._read.inc(count)
        if self._read_from is not None:
            self._read_from.inc(count)
        parser = self._parser
        results, failed = guarded(
            lambda _positions: parser.parse(batch),
            range(count),
            batch.record,
            dl.STAGE_PARSE,
            "ParseEvents",
            one_fn=lambda positions: parser.parse_with_reference(batch, positions),
        )
        yield from _tagged(failed)
        if len(results) == 1:
            parsed, rejected = results[0]
        else:  # record by record: only the reference decoded
            parsed = ParsedBatch(batch, [], [d for result in results for d in result[0].decoded])
            rejected = [r for result in results for r in result[1]]
        yield from _tagged(dead_letters(batch, rejected, dl.STAGE_PARSE))
        if parsed.valid or parsed.decoded:
            yield parsed


class ParseEvents(beam.PTransform):
    """RecordBatches -> ParsedBatches; rejects go to the ``dead_letter`` output (stage=parse).

    ``source_kind`` (``kafka``, ``pubsub``, ``file``, ``synthetic``): records read are also counted under
    ``records_read_<kind>``.
    """

    def __init__(
        self,
        fmt: str = FORMAT_JSON,
        key_field: str = "page",
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        max_payload_bytes: int = 1 << 20,
        source_kind: str = "",
    ) -> None:
        super().__init__()
        decoder_for(fmt)  # fail at construction on an unknown format
        self._dofn = _ParseDoFn(fmt, key_field, max_clock_skew_s, max_payload_bytes, source_kind)

    def expand(self, batches):
        return batches | "Decode" >> beam.ParDo(self._dofn).with_outputs(dl.DEAD_LETTER_TAG, main="parsed")


class _ValidateDoFn(beam.DoFn):
    def __init__(self, fmt: str, key_field: str, max_clock_skew_s: float, max_payload_bytes: int) -> None:
        self._args = (fmt, key_field, max_clock_skew_s, max_payload_bytes)
        self._valid = metrics.counter(metrics.EVENTS_VALID)

    def setup(self) -> None:
        self._parser = BatchParser(*self._args)

    def process(self, parsed: ParsedBatch, arrival=beam.DoFn.TimestampParam) -> Iterator[Any]:
        parser, batch = self._parser, parsed.batch
        results, failed = guarded(
            lambda decoded: parser.validate_with_reference(batch, decoded, arrival.micros),
            parsed.decoded,
            lambda item: batch.record(item[0]),
            dl.STAGE_VALIDATE,
            "ValidateEvents",
        )
        yield from _tagged(failed)
        checked = [v for result in results for v in result[0]]
        yield from _tagged(dead_letters(batch, [r for result in results for r in result[1]], dl.STAGE_VALIDATE))
        valid = merge_valid(parsed.valid, checked)  # both in batch order: the retry takes the records in order
        if valid:
            self._valid.inc(len(valid))
            yield ValidBatch(batch, valid)


class ValidateEvents(beam.PTransform):
    """ParsedBatches -> ValidBatches; rejects go to the ``dead_letter`` output (stage=validate)."""

    def __init__(
        self,
        fmt: str = FORMAT_JSON,
        key_field: str = "page",
        max_clock_skew_s: float = DEFAULT_MAX_CLOCK_SKEW_S,
        max_payload_bytes: int = 1 << 20,
    ) -> None:
        super().__init__()
        self._dofn = _ValidateDoFn(fmt, key_field, max_clock_skew_s, max_payload_bytes)

    def expand(self, parsed):
        return parsed | "Check" >> beam.ParDo(self._dofn).with_outputs(dl.DEAD_LETTER_TAG, main="valid")
