"""The analytics steps for bounded input, one element per *batch* of records (docs/benchmarks.md says why).

A Python Beam pipeline pays a few microseconds per element and per step, more than parsing and validating an
event costs. Bounded input therefore flows as batches (``RecordBatch``: a few thousand raw records) through the
same steps, with the same rules and the same outputs as the record-by-record graph streaming uses:

- ``ParseBatches`` / ``ValidateBatches``: the fast path (``fast_json``) accepts plainly valid JSON records, the
  reference parser and validator decide every other record (dead letters with the same code, field and message).
- ``TimeRows``: the valid events as compact rows ``(event_id, event_time_us, event_type, key, user_id, value)``.
- ``DeduplicateRows``: rows are routed to a shard by a stable hash of ``event_id`` (every copy of an id meets in
  one shard, whatever batch, bundle or worker it came from), packed as one msgpack blob per batch and shard,
  grouped, and each shard applies the rule of ``dedup.keep_first_per_horizon`` to all of its rows.
- ``PreAggregateWindows``: a bundle's kept rows are summed per (time slice, event_type, key), a slice being a
  stretch of time whose instants share their windows (``windowing.slicer``); at the end of the bundle each
  partial goes to the windows of its events (``windowing.windowed_partials``), and
  ``CombinePerKey(MergeAggregatesFn)`` (with combiner lifting) merges them per window and group. Fixed and
  sliding windows are part of the key (computed by the window function itself): a windowed GroupByKey costs the
  direct runner a trigger state machine per element, and the rows are the same. Session windows, which merge,
  keep their windows.

These functions also make up the benchmark's plain single-process loop (``benchmarks/plain_loop.py``), so Beam and
the loop do the same work with the same code.
"""

from __future__ import annotations

import bisect
import gc
import pickle
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple

import apache_beam as beam
import msgspec
from apache_beam.transforms.window import GlobalWindows, IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming, WindowedValue

from transforms import dead_letter as dl
from transforms.aggregate import Accumulator, MergeAggregatesFn, aggregate_row, preaggregate
from transforms.dead_letter import Rejection
from transforms.dedup import Row, keep_first_per_horizon
from transforms.fast_json import FastJsonValidator, Valid, valid_of
from transforms.guard import processing_error_dead_letters
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.parse import FORMAT_JSON, decoder_for, parse_record
from transforms.pseudonymize import USER_ID, Pseudonymizer, load_key
from transforms.records import RecordBatch, SourceRecord
from transforms.secrets import parse_secret_ref
from transforms.timefmt import now_us
from transforms.validate import DEFAULT_MAX_CLOCK_SKEW_S, EventValidator
from transforms.windowing import WindowSpec, slicer, windowed_partials

# Dedup shards: every copy of an event_id meets in one. More shards spread the work (and a shard's memory) over
# more workers; each shard holds its rows in full while it deduplicates them.
DEDUP_SHARDS = 32


class ParsedBatch(NamedTuple):
    batch: RecordBatch
    valid: list[Valid]  # accepted by the fast path
    decoded: list[tuple[int, dict[str, Any]]]  # decoded by the reference parser, for the reference validator


class ValidBatch(NamedTuple):
    batch: RecordBatch
    valid: list[Valid]


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
        if self._fast is not None and batch.decoded is None:
            valid, rest = self._fast.validate_batch(batch.payloads)
        else:
            valid, rest = [], range(len(batch.payloads))
        decoded: list[tuple[int, dict[str, Any]]] = []
        rejected: list[tuple[int, Rejection]] = []
        for i in rest:
            result = parse_record(batch.record(i), self._decode, self._max_payload_bytes)
            if type(result) is Rejection:
                rejected.append((i, result))
            else:
                decoded.append((i, result))
        return ParsedBatch(batch, valid, decoded), rejected

    def parse_one_by_one(
        self, batch: RecordBatch
    ) -> tuple[ParsedBatch, list[tuple[int, Rejection]], list[tuple[int, Exception]]]:
        """``parse`` record by record with the reference alone, for a batch that made ``parse`` throw: the
        records that throw on their own come back as (position, exception), the others as usual."""
        decoded: list[tuple[int, dict[str, Any]]] = []
        rejected: list[tuple[int, Rejection]] = []
        failed: list[tuple[int, Exception]] = []
        for i in range(len(batch.payloads)):
            try:
                result = parse_record(batch.record(i), self._decode, self._max_payload_bytes)
            except Exception as exc:  # noqa: BLE001 - the record's processing_error dead letter
                failed.append((i, exc))
                continue
            (rejected if type(result) is Rejection else decoded).append((i, result))
        return ParsedBatch(batch, [], decoded), rejected, failed

    def validate_one_by_one(
        self, parsed: ParsedBatch, arrival_us: int = 0
    ) -> tuple[ValidBatch, list[tuple[int, Rejection]], list[tuple[int, Exception]]]:
        """``validate`` record by record, for a batch that made ``validate`` throw (see ``parse_one_by_one``)."""
        valid, rejected, failed = list(parsed.valid), [], []
        for i, obj in parsed.decoded:
            try:
                checked, refused = self.validate(ParsedBatch(parsed.batch, [], [(i, obj)]), arrival_us)
            except Exception as exc:  # noqa: BLE001 - the record's processing_error dead letter
                failed.append((i, exc))
                continue
            valid.extend(checked.valid)
            rejected.extend(refused)
        valid.sort(key=_position)
        return ValidBatch(parsed.batch, valid), rejected, failed

    def validate(self, parsed: ParsedBatch, arrival_us: int = 0) -> tuple[ValidBatch, list[tuple[int, Rejection]]]:
        batch, valid = parsed.batch, parsed.valid
        rejected: list[tuple[int, Rejection]] = []
        if parsed.decoded:
            valid = list(valid)
            arrivals = batch.arrivals
            for i, obj in parsed.decoded:
                result = self._validator.validate(obj, batch.record(i), arrivals[i] if arrivals else arrival_us)
                if type(result) is Rejection:
                    rejected.append((i, result))
                else:
                    bisect.insort(valid, valid_of(i, result), key=_position)  # batch order, whichever path
        return ValidBatch(batch, valid), rejected


def _position(valid: Valid) -> int:
    return valid[0]


def dead_letters(batch: RecordBatch, rejected: list[tuple[int, Rejection]], stage: str) -> Iterator[dict[str, Any]]:
    for i, rejection in rejected:
        record = batch.record(i)
        yield dl.dead_letter(rejection, record.payload, record.source, record.metadata, stage)


def rows_of(valid: list[Valid]) -> list[Row]:
    """The compact rows dedup and the aggregates need: (event_id, event_time_us, event_type, key, user_id, value)."""
    return [(v[1], v[4], v[2], v[8], v[3], v[6]) for v in valid]


def shard_of(event_id: str) -> int:
    """Stable across processes and runs (``hash()`` of a str is not): every copy of an id meets in one shard."""
    return zlib.crc32(event_id.encode("utf-8", "surrogatepass")) % DEDUP_SHARDS


def pack_rows(rows: list[Row]) -> bytes:
    try:
        return msgspec.msgpack.encode(rows)
    except OverflowError:  # an integer value beyond 64 bits (valid up to the double range): pickle keeps it exact
        return pickle.dumps(rows, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_rows(blob: bytes) -> list[Row]:
    if blob[:1] == b"\x80":  # a pickle; msgpack arrays start with 0x90-0x9f or 0xdc/0xdd
        return pickle.loads(blob)
    return msgspec.msgpack.decode(blob)


# Bounded input keeps millions of small objects alive at once (the direct runner's in-memory shuffle, the dedup
# shards); with CPython's default thresholds (700, 10, 10) the cyclic collector walks them over and over: 12 % of
# the 1M-event batch job (docs/benchmarks.md), nothing in the plain loop. The rows and batches hold no reference
# cycles, so collecting less often only lets rare cyclic garbage wait a little longer.
GC_THRESHOLDS = (50_000, 20, 100)


def relax_gc_for_bounded_input(thresholds: tuple[int, int, int] | None = GC_THRESHOLDS) -> None:
    """Raises the worker process's GC thresholds to ``thresholds`` (never lowers what someone set higher); None (a
    run where the tweak was not measured to help) leaves the collector alone."""
    if thresholds is None:
        return
    current = gc.get_threshold()
    if current[0] < thresholds[0]:
        gc.set_threshold(*(max(c, t) for c, t in zip(current, thresholds, strict=True)))


# --- Beam transforms -------------------------------------------------------------------------------------------


def _as_batch(element: RecordBatch | SourceRecord) -> RecordBatch:
    return element if type(element) is RecordBatch else RecordBatch.of(element)


class _ParseBatchDoFn(beam.DoFn):
    def __init__(
        self, fmt: str, key_field: str, max_clock_skew_s: float, max_payload_bytes: int, gc_thresholds=None
    ) -> None:
        self._args = (fmt, key_field, max_clock_skew_s, max_payload_bytes)
        self._gc_thresholds = gc_thresholds
        self._read = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "records_read")

    def setup(self) -> None:
        relax_gc_for_bounded_input(self._gc_thresholds)  # in every worker process: setup runs where the bundles do
        self._parser = BatchParser(*self._args)

    def process(self, element: RecordBatch | SourceRecord) -> Iterator[Any]:
        batch = _as_batch(element)
        self._read.inc(len(batch.payloads))
        try:
            parsed, rejected = self._parser.parse(batch)
            failed: list[tuple[int, Exception]] = []
        except Exception:  # noqa: BLE001 - one record must not fail its batch: retried record by record
            parsed, rejected, failed = self._parser.parse_one_by_one(batch)
        for i, exc in failed:
            yield from _processing_errors(batch.record(i), dl.STAGE_PARSE, "ParseEvents", exc)
        for row in dead_letters(batch, rejected, dl.STAGE_PARSE):
            yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)
        yield parsed


class ParseBatches(beam.PTransform):
    """RecordBatches -> ParsedBatches; rejects go to the ``dead_letter`` output (stage=parse)."""

    def __init__(
        self, fmt: str, key_field: str, max_clock_skew_s: float, max_payload_bytes: int, gc_thresholds=None
    ) -> None:
        super().__init__()
        decoder_for(fmt)  # fail at construction on an unknown format
        self._args = (fmt, key_field, max_clock_skew_s, max_payload_bytes, gc_thresholds)

    def expand(self, batches):
        return batches | "DecodeBatches" >> beam.ParDo(_ParseBatchDoFn(*self._args)).with_outputs(
            dl.DEAD_LETTER_TAG, main="parsed"
        )


class _ValidateBatchDoFn(beam.DoFn):
    def __init__(self, fmt: str, key_field: str, max_clock_skew_s: float, max_payload_bytes: int) -> None:
        self._args = (fmt, key_field, max_clock_skew_s, max_payload_bytes)
        self._valid = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "events_valid")

    def setup(self) -> None:
        self._parser = BatchParser(*self._args)

    def process(self, parsed: ParsedBatch, arrival=beam.DoFn.TimestampParam) -> Iterator[Any]:
        try:
            checked, rejected = self._parser.validate(parsed, arrival.micros)
            failed: list[tuple[int, Exception]] = []
        except Exception:  # noqa: BLE001 - one record must not fail its batch: retried record by record
            checked, rejected, failed = self._parser.validate_one_by_one(parsed, arrival.micros)
        for i, exc in failed:
            yield from _processing_errors(parsed.batch.record(i), dl.STAGE_VALIDATE, "ValidateEvents", exc)
        for row in dead_letters(parsed.batch, rejected, dl.STAGE_VALIDATE):
            yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)
        if checked.valid:
            self._valid.inc(len(checked.valid))
            yield checked


class ValidateBatches(beam.PTransform):
    """ParsedBatches -> ValidBatches; rejects go to the ``dead_letter`` output (stage=validate)."""

    def __init__(self, fmt: str, key_field: str, max_clock_skew_s: float, max_payload_bytes: int) -> None:
        super().__init__()
        self._args = (fmt, key_field, max_clock_skew_s, max_payload_bytes)

    def expand(self, parsed):
        return parsed | "CheckBatches" >> beam.ParDo(_ValidateBatchDoFn(*self._args)).with_outputs(
            dl.DEAD_LETTER_TAG, main="valid"
        )


class _PseudonymizeBatchDoFn(beam.DoFn):
    """``user_id`` (and a ``user_id`` key) of every valid event -> its pseudonym; the key is resolved in ``setup``."""

    def __init__(self, key_reference: str, key_is_user_id: bool) -> None:
        self._key_reference = key_reference
        self._key_is_user_id = key_is_user_id
        self._pseudonymizer: Pseudonymizer | None = None

    def setup(self) -> None:
        self._pseudonymizer = Pseudonymizer(load_key(self._key_reference))

    def process(self, checked: ValidBatch) -> Iterator[ValidBatch]:
        pseudonym = self._pseudonymizer.pseudonym
        if self._key_is_user_id:
            valid = [(*v[:3], p, *v[4:8], p) for v in checked.valid for p in (pseudonym(v[3]),)]
        else:
            valid = [(*v[:3], pseudonym(v[3]), *v[4:]) for v in checked.valid]
        yield ValidBatch(checked.batch, valid)


class PseudonymizeBatches(beam.PTransform):
    """ValidBatches -> the same with pseudonymized user ids (transforms/pseudonymize.py, ``PseudonymizeEvents``)."""

    def __init__(self, key_reference: str, key_field: str) -> None:
        super().__init__()
        parse_secret_ref(key_reference)  # a malformed reference fails at construction, not on the workers
        self._dofn = _PseudonymizeBatchDoFn(key_reference, key_field == USER_ID)

    def expand(self, checked):
        return checked | "Hmac" >> beam.ParDo(self._dofn)


def _processing_errors(record: Any, stage: str, step: str, exc: Exception) -> Iterator[beam.pvalue.TaggedOutput]:
    for row in processing_error_dead_letters(record, stage, step, exc):
        yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)


class _TimeRowsDoFn(beam.DoFn):
    """ValidBatch -> its rows, at the payload's event time or the source's timestamp.

    As ``AssignEventTime`` record by record: a record that makes it throw is a ``processing_error`` dead letter
    (stage ``event_time``) and the others go on (the batch is then taken record by record).
    """

    def __init__(self, source_time: bool) -> None:
        self._source_time = source_time

    def _rows(self, checked: ValidBatch, valid: list[Valid], arrival_us: int) -> list[Row]:
        rows = rows_of(valid)
        if not self._source_time:
            return rows
        arrivals = checked.batch.arrivals
        return [
            (row[0], arrivals[v[0]] if arrivals else arrival_us, *row[2:]) for row, v in zip(rows, valid, strict=True)
        ]

    def process(self, checked: ValidBatch, arrival=beam.DoFn.TimestampParam) -> Iterator[Any]:
        try:
            yield self._rows(checked, checked.valid, arrival.micros)
            return
        except Exception:  # noqa: BLE001 - one bad record must not fail the batch: find it, record by record
            pass
        rows: list[Row] = []
        for valid in checked.valid:
            try:
                rows.extend(self._rows(checked, [valid], arrival.micros))
            except Exception as exc:  # noqa: BLE001 - its dead letter, as guarded_map gives one
                yield from _processing_errors(
                    checked.batch.record(valid[0]), dl.STAGE_EVENT_TIME, "AssignEventTime", exc
                )
        if rows:
            yield rows


class TimeRows(beam.PTransform):
    """ValidBatches -> {"rows": lists of rows whose time is the event time, "dead_letter": rows}."""

    def __init__(self, source_time: bool = False) -> None:
        super().__init__()
        self._source_time = source_time

    def expand(self, checked):
        return checked | "Rows" >> beam.ParDo(_TimeRowsDoFn(self._source_time)).with_outputs(
            dl.DEAD_LETTER_TAG, main="rows"
        )


class _ShardRowsDoFn(beam.DoFn):
    def process(self, rows: list[Row]) -> Iterator[tuple[int, bytes]]:
        shards: dict[int, list[Row]] = {}
        for row in rows:
            shard = shard_of(row[0])
            members = shards.get(shard)
            if members is None:
                shards[shard] = [row]
            else:
                members.append(row)
        for shard, members in shards.items():
            yield shard, pack_rows(members)


class _KeepFirstDoFn(beam.DoFn):
    def __init__(self, horizon_us: int) -> None:
        self._horizon_us = horizon_us
        self._duplicates = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "duplicates")

    def process(self, element: tuple[int, Iterable[bytes]]) -> Iterator[Any]:
        rows: list[Row] = []
        for blob in element[1]:
            rows.extend(unpack_rows(blob))
        try:
            kept, duplicates = keep_first_per_horizon(rows, self._horizon_us)
        except Exception:  # noqa: BLE001 - as record by record: the ids that make it throw become dead letters
            kept, failed, dead_letters = self._id_by_id(rows)
            duplicates = len(rows) - len(kept) - failed
            yield from dead_letters
        if duplicates:
            self._duplicates.inc(duplicates)
        if kept:
            # A real time (not the end of the global window) for the window assignment that follows.
            yield beam.window.TimestampedValue(kept, Timestamp(micros=min(row[1] for row in kept)))

    def _id_by_id(self, rows: list[Row]) -> tuple[list[Row], int, list[beam.pvalue.TaggedOutput]]:
        """Each id's copies on their own: an id whose copies throw is one dead letter per copy (stage dedup).

        The rows carry no payload (the dedup shuffle holds only what the aggregates need), so these dead letters
        describe the row instead; the record-by-record graph (AnalyticsConfig.batched=False) keeps payloads.
        """
        kept: list[Row] = []
        failed = 0
        dead_letters: list[beam.pvalue.TaggedOutput] = []
        copies: dict[str, list[Row]] = {}
        for row in rows:
            copies.setdefault(row[0], []).append(row)
        for group in copies.values():
            try:
                kept.extend(keep_first_per_horizon(group, self._horizon_us)[0])
            except Exception as exc:  # noqa: BLE001 - its dead letters, as dead_letter_on_error gives them
                failed += len(group)
                for row in group:
                    dead_letters.extend(_processing_errors(row, dl.STAGE_DEDUP, "DeduplicateEvents", exc))
        return kept, failed, dead_letters


class DeduplicateRows(beam.PTransform):
    """Lists of rows -> {"rows": lists of rows without the repeats of an event_id within the horizon (counted),
    "dead_letter": rows}."""

    def __init__(self, horizon_s: float) -> None:
        super().__init__()
        self._horizon_us = int(horizon_s * 1_000_000)

    def expand(self, rows):
        return (
            rows
            | "ShardByEventId" >> beam.ParDo(_ShardRowsDoFn()).with_output_types(tuple[int, bytes])
            | "GroupByShard" >> beam.GroupByKey()
            | "KeepFirst" >> beam.ParDo(_KeepFirstDoFn(self._horizon_us)).with_outputs(dl.DEAD_LETTER_TAG, main="rows")
        )


def _merge_into(acc: Accumulator, other: Accumulator) -> Accumulator:
    acc.merge(other)
    return acc


class _PreAggregateDoFn(beam.DoFn):
    """Sums a whole bundle's rows per (slice, event_type, key); emits the partials at the end of the bundle.

    Its state is bounded by keys x windows x sketch size, however many events the bundle holds. Fixed and sliding
    windows are computed here, by the window function itself, and become part of the key (the partials stay in
    the global window); session windows must merge in the GroupByKey, so their partials carry their window.
    """

    def __init__(self, spec: WindowSpec) -> None:
        self._spec = spec

    def setup(self) -> None:
        self._window_fn = self._spec.window_fn()
        self._slicing = slicer(self._window_fn)

    def start_bundle(self) -> None:
        self._partials: dict[tuple[int, str, str | None], Accumulator] = {}

    def process(self, rows: list[Row]) -> None:
        preaggregate(rows, self._slicing, into=self._partials)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        partials, self._partials = self._partials, {}
        windowed = windowed_partials(partials, self._window_fn, _merge_into)
        if self._window_fn.is_merging():
            for window, first_us, group, acc in windowed:
                yield WindowedValue((group, acc), Timestamp(micros=first_us), [window])
            return
        for window, first_us, (event_type, key), acc in windowed:
            group = (window.start.micros, window.end.micros, event_type, key)
            yield GlobalWindows.windowed_value((group, acc), Timestamp(micros=first_us))


class PreAggregateWindows(beam.PTransform):
    """Lists of rows -> (window and group, partial Accumulator) per bundle, ready to be merged per key."""

    def __init__(self, spec: WindowSpec) -> None:
        super().__init__()
        self._spec = spec

    def expand(self, rows):
        if self._spec.window_fn().is_merging():
            # Session windows merge in the GroupByKey of the combine, which needs their windowing (bounded
            # input: default trigger, no lateness, one final pane per window). The lists of rows are not windowed
            # data themselves: each partial carries the window of its events.
            rows = rows | "Into" >> beam.WindowInto(self._spec.window_fn())
        return rows | "PreAggregate" >> beam.ParDo(_PreAggregateDoFn(self._spec))


_FINAL_PANE = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)


class _FormatBatchRowDoFn(beam.DoFn):
    """One row per window and group; bounded input has exactly one pane per window and group, on time and last."""

    def __init__(self) -> None:
        self._rows = beam.metrics.Metrics.counter(METRICS_NAMESPACE, "aggregate_rows")

    def process(self, element: tuple[tuple, tuple[int, float, int, bytes]], window=beam.DoFn.WindowParam):
        group, result = element
        if len(group) == 4:  # the window is part of the key (fixed, sliding)
            start, end, event_type, key = group
            window, group = IntervalWindow(Timestamp(micros=start), Timestamp(micros=end)), (event_type, key)
        self._rows.inc()
        yield aggregate_row(group, result, window, _FINAL_PANE, now_us())


class MergeAggregates(beam.PTransform):
    """Partial accumulators -> one aggregate row per (window, event_type, key)."""

    def expand(self, partials):
        return (
            partials
            | "Combine" >> beam.CombinePerKey(MergeAggregatesFn())
            | "ToRow" >> beam.ParDo(_FormatBatchRowDoFn())
        )
