"""Dropping events whose ``event_id`` was already accepted within the dedup horizon (event time).

The rule (``is_duplicate``): the same id, and event times at most ``--dedup_horizon`` apart. The first copy to
arrive is kept; copies of one id within one batch are taken in event-time order (ties by what the aggregates see),
so within a batch the kept copy never depends on the order the records came in.

One implementation for bounded and unbounded input, on every runner (``DeduplicateEvents``):

- ``ShardByEventId``: a batch's rows go to one of ``DEDUP_SHARDS`` shards by a stable hash (CRC-32) of
  ``event_id``, packed as one msgpack blob per batch and shard, so every copy of an id meets in one shard, whatever
  batch, bundle or worker it came from.
- ``KeepFirst``: keyed state per shard, in the runner's state backend (a Flink checkpoint holds it). Each blob costs
  one state read (a token that changes with every write), one append to the shard's bag of (id, first seen) pairs
  and, for unbounded input, one timer: not one read, write and timer per event. The ids live in the worker as a
  dict per shard, rebuilt from the bag only when the token says the state changed elsewhere (another worker, a
  retried bundle, a restored checkpoint).
- Unbounded input: the state expires in event time. One watermark timer per shard fires at the first expiry
  rounded up to a quarter of the horizon and drops the ids first seen more than a horizon before it, so the state
  holds the ids of one horizon (plus a quarter) however long the stream runs. Bounded input keeps every id until
  the end (its watermark only moves then), without timers.
"""

from __future__ import annotations

import os
import pickle
import zlib
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import Any

import apache_beam as beam
import msgspec
from apache_beam.coders import BytesCoder
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import BagStateSpec, ReadModifyWriteStateSpec, TimerSpec, on_timer
from apache_beam.utils.timestamp import Timestamp

from transforms import dead_letter as dl
from transforms import metrics
from transforms.guard import guarded
from transforms.records import Row, RowBatch, row_record

DEFAULT_DEDUP_HORIZON_S = 600
# Every copy of an id meets in one shard; more shards spread the work (and the state) over more workers.
DEDUP_SHARDS = 32
# The expiry timer fires at most this many times per horizon and shard (each firing rewrites the shard's state).
EXPIRY_STEPS = 4
_NEVER = 1 << 62


def is_duplicate(first_seen_us: int | None, event_time_us: int, horizon_us: int) -> bool:
    """The dedup rule: same id, and event times at most ``horizon`` apart."""
    return first_seen_us is not None and abs(event_time_us - first_seen_us) <= horizon_us


def _row_order(row: Row) -> tuple:
    """Copies of one id in a batch are taken in event-time order; ties by what the aggregates see, so the kept copy
    (and so the result) never depends on arrival order within the batch. Copies equal in all of these are
    interchangeable."""
    _, when, event_type, key, user_id, value = row[:6]
    return when, event_type, key is not None, key or "", user_id, value


def keep_first(
    rows: Sequence[Row], first_seen: dict[str, int], pending: dict[str, int], horizon_us: int
) -> tuple[list[Row], int]:
    """(the rows kept, how many were duplicates), judged against ``first_seen`` (the state) and ``pending`` (what
    this element kept so far); the ids kept are added to ``pending`` (last, so a throw leaves it as it was)."""
    copies: dict[str, list[Row]] | None = None  # ids given more than once here: their rows, taken in _row_order
    first_row: dict[str, Row] = {}
    for row in rows:
        held = first_row.setdefault(row[0], row)
        if held is not row:
            if copies is None:
                copies = {}
            copies.setdefault(row[0], [held]).append(row)
    kept: list[Row] = []
    new: dict[str, int] = {}
    duplicates = 0
    for event_id, row in first_row.items():
        if copies is not None and event_id in copies:
            continue
        first = pending.get(event_id)
        if first is None:
            first = first_seen.get(event_id)
        if is_duplicate(first, row[1], horizon_us):
            duplicates += 1
        else:
            new[event_id] = row[1]
            kept.append(row)
    for event_id, group in (copies or {}).items():
        first = pending.get(event_id)
        if first is None:
            first = first_seen.get(event_id)
        for row in sorted(group, key=_row_order):
            if is_duplicate(first, row[1], horizon_us):
                duplicates += 1
            else:
                first = new[event_id] = row[1]
                kept.append(row)
    pending.update(new)
    return kept, duplicates


def shard_of(event_id: str) -> int:
    """Stable across processes and runs (``hash()`` of a str is not): every copy of an id meets in one shard."""
    return zlib.crc32(event_id.encode("utf-8", "surrogatepass")) % DEDUP_SHARDS


_PACKED_ROWS = tuple[str, list[tuple[str, int, str, str | None, str, int | float, int, bytes, dict | None]]]
_rows_decoder = msgspec.msgpack.Decoder(_PACKED_ROWS)
_seen_decoder = msgspec.msgpack.Decoder(list[tuple[str, int]])
_encoder = msgspec.msgpack.Encoder()


def pack_rows(batch: RowBatch) -> bytes:
    try:
        return _encoder.encode((batch.source, batch.rows))
    except OverflowError:  # an integer value beyond 64 bits (valid up to the double range): pickle keeps it exact
        return pickle.dumps((batch.source, batch.rows), protocol=pickle.HIGHEST_PROTOCOL)


def unpack_rows(blob: bytes) -> RowBatch:
    if blob[:1] == b"\x80":  # a pickle; a msgpack array of two starts with 0x92
        return RowBatch(*pickle.loads(blob))
    return RowBatch(*_rows_decoder.decode(blob))


class _ShardDoFn(beam.DoFn):
    def process(self, batch: RowBatch) -> Iterator[tuple[int, bytes]]:
        shards: dict[int, list[Row]] = {}
        for row in batch.rows:
            shard = shard_of(row[0])
            members = shards.get(shard)
            if members is None:
                shards[shard] = [row]
            else:
                members.append(row)
        for shard, members in shards.items():
            yield shard, pack_rows(RowBatch(batch.source, members))


class _ShardIds:
    """The ids of one shard as the worker holds them, and the state token they were read at."""

    __slots__ = ("token", "first_seen", "earliest")

    def __init__(self, token: bytes | None, first_seen: dict[str, int]) -> None:
        self.token = token
        self.first_seen = first_seen
        self.earliest = min(first_seen.values(), default=_NEVER)


class _KeepFirstDoFn(beam.DoFn):
    SEEN = BagStateSpec("seen", BytesCoder())  # msgpack [(event_id, first seen µs), ...], one blob per write
    TOKEN = ReadModifyWriteStateSpec("token", BytesCoder())  # new with every write to SEEN
    EXPIRY = TimerSpec("expiry", TimeDomain.WATERMARK)

    def __init__(self, horizon_us: int, expire: bool) -> None:
        self._horizon_us = horizon_us
        self._expire = expire
        self._step_us = max(horizon_us // EXPIRY_STEPS, 1_000_000)
        self._duplicates = metrics.counter(metrics.DUPLICATES)
        self._state_ids = metrics.counter(metrics.DEDUP_STATE_IDS)

    def setup(self) -> None:
        self._shards: dict[int, _ShardIds] = {}

    def _ids(self, shard: int, seen: Any, token: Any) -> _ShardIds:
        current = token.read()
        ids = self._shards.get(shard)
        if ids is not None and ids.token == current:
            return ids
        first_seen: dict[str, int] = {}
        for blob in seen.read():
            first_seen.update(_seen_decoder.decode(blob))
        ids = self._shards[shard] = _ShardIds(current, first_seen)
        return ids

    @staticmethod
    def _write(ids: _ShardIds, entries: Iterable[tuple[str, int]], seen: Any, token: Any) -> None:
        entries = list(entries)
        if entries:
            seen.add(_encoder.encode(entries))
        ids.token = os.urandom(8)
        token.write(ids.token)

    def _expiry_at(self, first_seen_us: int) -> Timestamp:
        due = first_seen_us + self._horizon_us
        return Timestamp(micros=due + (-due) % self._step_us)

    def process(
        self,
        element: tuple[int, bytes],
        seen=beam.DoFn.StateParam(SEEN),
        token=beam.DoFn.StateParam(TOKEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ) -> Iterator[Any]:
        shard, blob = element
        batch = unpack_rows(blob)
        ids = self._ids(shard, seen, token)
        pending: dict[str, int] = {}
        results, failed = guarded(
            lambda rows: keep_first(rows, ids.first_seen, pending, self._horizon_us),
            batch.rows,
            partial(row_record, batch.source),
            dl.STAGE_DEDUP,
            "DeduplicateEvents",
        )
        for row in failed:
            yield beam.pvalue.TaggedOutput(dl.DEAD_LETTER_TAG, row)
        duplicates = sum(result[1] for result in results)
        if duplicates:
            self._duplicates.inc(duplicates)
        if pending:
            added = sum(1 for event_id in pending if event_id not in ids.first_seen)
            self._write(ids, pending.items(), seen, token)
            ids.first_seen.update(pending)
            if added:
                self._state_ids.inc(added)
            earliest = min(pending.values())
            if self._expire and earliest < ids.earliest:
                expiry.set(self._expiry_at(earliest))
            ids.earliest = min(ids.earliest, earliest)
        kept = results[0][0] if len(results) == 1 else [row for result in results for row in result[0]]
        if kept:
            yield RowBatch(batch.source, kept)

    @on_timer(EXPIRY)
    def expire(
        self,
        shard=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        seen=beam.DoFn.StateParam(SEEN),
        token=beam.DoFn.StateParam(TOKEN),
        expiry=beam.DoFn.TimerParam(EXPIRY),
    ) -> None:
        ids = self._ids(shard, seen, token)
        cutoff = fired.micros - self._horizon_us
        kept = {event_id: first for event_id, first in ids.first_seen.items() if first > cutoff}
        expired = len(ids.first_seen) - len(kept)
        seen.clear()
        self._write(ids, kept.items(), seen, token)
        ids.first_seen = kept
        ids.earliest = min(kept.values(), default=_NEVER)
        if kept:
            expiry.set(self._expiry_at(ids.earliest))
        if expired:
            self._state_ids.dec(expired)


class DeduplicateEvents(beam.PTransform):
    """RowBatches -> ``{"rows": RowBatches without the repeats of an event_id within the horizon (counted),
    "dead_letter": rows}``. ``expire``: unbounded input, whose state expires with the horizon."""

    def __init__(self, horizon_s: float = DEFAULT_DEDUP_HORIZON_S, expire: bool = True) -> None:
        super().__init__()
        self._horizon_us = int(horizon_s * 1_000_000)
        self._expire = expire

    def expand(self, batches):
        return (
            batches
            | "ShardByEventId" >> beam.ParDo(_ShardDoFn()).with_output_types(tuple[int, bytes])
            | "KeepFirst"
            >> beam.ParDo(_KeepFirstDoFn(self._horizon_us, self._expire)).with_outputs(dl.DEAD_LETTER_TAG, main="rows")
        )
