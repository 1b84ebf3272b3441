"""Gathering the records of a bundle into batches: every later step works on batches, bounded or unbounded.

A Python Beam step pays a few microseconds per element, more than parsing and validating an event costs, so the
graph's unit of work is a ``RecordBatch``. Sources that read batches themselves (files, the bounded synthetic
source) pass through untouched; sources that emit one record per element (Kafka, Pub/Sub, a replay) are gathered
here, within the bundle the runner gives: a batch is emitted when it holds ``max_records`` records or
``max_bytes`` bytes, and whatever is left when the bundle finishes. A batch never waits for input beyond its
bundle, so batching adds no latency beyond the runner's bundle time.

Records arrive in the global window (every source emits there) with their arrival time as timestamp; a batch keeps
each record's arrival time (``RecordBatch.arrivals``) and is stamped with the earliest of them, so it holds the
watermark no later than its records would have. Event time is assigned per event later (``AssignEventTime``).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.records import RecordBatch, SourceRecord

MAX_BATCH_RECORDS = 2048
MAX_BATCH_BYTES = 4 << 20

# Bounded input on the direct runner keeps millions of small objects alive at once (its in-memory shuffle and
# state); with CPython's default thresholds (700, 10, 10) the cyclic collector walks them over and over: 12 % of the
# 1M-event batch job (docs/benchmarks.md). Batches and rows hold no reference cycles, so collecting less often only
# lets rare cyclic garbage wait a little longer. Only where it was measured to help (the launch spec decides).
GC_THRESHOLDS = (50_000, 20, 100)


def relax_gc(thresholds: tuple[int, int, int]) -> None:
    """Raises the worker process's GC thresholds to ``thresholds`` (never lowers what someone set higher)."""
    current = gc.get_threshold()
    if current[0] < thresholds[0]:
        gc.set_threshold(*(max(c, t) for c, t in zip(current, thresholds, strict=True)))


class _Gathering:
    """The records of one source gathered so far in a bundle."""

    __slots__ = ("source", "payloads", "metadata", "decoded", "arrivals", "size")

    def __init__(self, source: str) -> None:
        self.source = source
        self.payloads: list[bytes] = []
        self.metadata: list[dict[str, Any] | None] = []
        self.decoded: list[Any] = []
        self.arrivals: list[int] = []
        self.size = 0

    def add(self, record: SourceRecord, arrival_us: int) -> None:
        self.payloads.append(record.payload)
        self.metadata.append(record.metadata)
        self.decoded.append(record.decoded)
        self.arrivals.append(arrival_us)
        self.size += len(record.payload)

    def batch(self) -> RecordBatch:
        return RecordBatch(
            self.source,
            self.payloads,
            self.metadata if any(m is not None for m in self.metadata) else None,
            self.decoded if any(d is not None for d in self.decoded) else None,
            self.arrivals,
        )


class _GatherDoFn(beam.DoFn):
    def __init__(self, max_records: int, max_bytes: int, gc_thresholds: tuple[int, int, int] | None) -> None:
        self._max_records = max_records
        self._max_bytes = max_bytes
        self._gc_thresholds = gc_thresholds

    def setup(self) -> None:
        if self._gc_thresholds is not None:
            relax_gc(self._gc_thresholds)  # in every worker process: setup runs where the bundles do

    def start_bundle(self) -> None:
        self._gathering: _Gathering | None = None

    def process(self, element: SourceRecord | RecordBatch, timestamp=beam.DoFn.TimestampParam) -> Iterator[Any]:
        if type(element) is RecordBatch:  # a source that reads batches itself
            yield element
            return
        gathering = self._gathering
        if gathering is not None and gathering.source != element.source:
            yield self._emit()
            gathering = None
        if gathering is None:
            gathering = self._gathering = _Gathering(element.source)
        gathering.add(element, timestamp.micros)
        if len(gathering.payloads) >= self._max_records or gathering.size >= self._max_bytes:
            yield self._emit()

    def _emit(self) -> beam.window.TimestampedValue:
        batch = self._gathering.batch()
        self._gathering = None
        return beam.window.TimestampedValue(batch, Timestamp(micros=min(batch.arrivals)))

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if self._gathering is not None:
            batch = self._gathering.batch()
            self._gathering = None
            yield WindowedValue(batch, Timestamp(micros=min(batch.arrivals)), [GlobalWindow()])


class BatchRecords(beam.PTransform):
    """SourceRecords (or RecordBatches) -> RecordBatches of at most ``max_records`` records and ``max_bytes`` bytes
    (a single larger record is a batch of its own), gathered within each bundle."""

    def __init__(
        self,
        max_records: int = MAX_BATCH_RECORDS,
        max_bytes: int = MAX_BATCH_BYTES,
        gc_thresholds: tuple[int, int, int] | None = None,
    ) -> None:
        """``gc_thresholds``: CPython GC thresholds for the worker processes (``GC_THRESHOLDS``), or None."""
        super().__init__()
        self._dofn = _GatherDoFn(max_records, max_bytes, gc_thresholds)

    def expand(self, records):
        return records | "Gather" >> beam.ParDo(self._dofn).with_output_types(RecordBatch)
