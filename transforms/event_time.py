"""Event time per event: the valid events of a batch become rows stamped with their event time.

A row (``records.Row``) holds what dedup, the too-late filter and the aggregates need, and what a dead letter of a
later step needs: ``(event_id, event_time_us, event_type, key, user_id, value, arrival_us, payload, metadata)``.
The event time is the payload's ``event_time``, or with ``--timestamp_source=publish_time|kafka_timestamp`` the
source's timestamp of the record (its arrival), which then drives windows, the dedup horizon and the too-late check
(which can then never fire: arrival is the event time).

The batch stays in the global window: windows are assigned from the rows' event times after dedup, when the
events are pre-aggregated (``windowing.WindowEvents``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam

from transforms import dead_letter as dl
from transforms.fast_json import Valid
from transforms.guard import guarded
from transforms.parse_validate import ValidBatch
from transforms.records import RecordBatch, Row, RowBatch


def rows_of(batch: RecordBatch, valid: Sequence[Valid], arrival_us: int, source_time: bool = False) -> list[Row]:
    """The rows of a batch's valid events; ``arrival_us`` stands for each record's arrival when the batch has none
    of its own (a batch read from files). ``source_time``: the arrival is the event time."""
    payloads, metadata, arrivals = batch.payloads, batch.metadata, batch.arrivals
    rows: list[Row] = []
    for v in valid:
        i = v[0]
        arrival = arrivals[i] if arrivals else arrival_us
        rows.append(
            (v[1], arrival if source_time else v[4], v[2], v[8], v[3], v[6], arrival, payloads[i],
             None if metadata is None else metadata[i])
        )  # fmt: skip
    return rows


class _AssignEventTimeDoFn(beam.DoFn):
    def __init__(self, source_time: bool) -> None:
        self._source_time = source_time

    def process(self, checked: ValidBatch, arrival=beam.DoFn.TimestampParam) -> Iterator[Any]:
        batch = checked.batch
        results, failed = guarded(
            lambda valid: rows_of(batch, valid, arrival.micros, self._source_time),
            checked.valid,
            lambda v: batch.record(v[0]),
            dl.STAGE_EVENT_TIME,
            "AssignEventTime",
        )
        for row in failed:
            yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)
        rows = results[0] if len(results) == 1 else [row for result in results for row in result]
        if rows:
            yield RowBatch(batch.source, rows)


class AssignEventTime(beam.PTransform):
    """ValidBatches -> {"rows": RowBatches whose rows carry their event time, "dead_letter": rows}."""

    def __init__(self, source_time: bool = False) -> None:
        super().__init__()
        self._source_time = source_time

    def expand(self, checked):
        return checked | "Rows" >> beam.ParDo(_AssignEventTimeDoFn(self._source_time)).with_outputs(
            dl.DEAD_LETTER_TAG, main="rows"
        )
