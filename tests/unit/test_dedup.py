"""DeduplicateEvents: one rule (``is_duplicate``), one implementation (sharded keyed state) for bounded input
(FnApiRunner) and a stream (TestStream), counted; the state expires with the horizon in event time."""

from __future__ import annotations

import copy
import itertools

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing import test_stream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.utils.timestamp import Timestamp

from pipelines.runners import fix_streaming_direct_runner_metrics
from pipelines.summary import counters
from transforms import dedup, metrics
from transforms.dedup import DEDUP_SHARDS, DeduplicateEvents, is_duplicate, keep_first, pack_rows, shard_of, unpack_rows
from transforms.records import Row, RowBatch, RowBatchCoder

S = 1_000_000
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
HORIZON_S = 600


def row(event_id: str, seconds: float, user: str = "u", value: int | float = 1, key: str | None = None) -> Row:
    t = T0 + int(seconds * S)
    return (event_id, t, "click", key, user, value, t, f'{{"event_id":"{event_id}"}}'.encode(), {"user": user})


def batch(*rows: Row) -> RowBatch:
    return RowBatch("test", list(rows))


def summary(kept: RowBatch) -> list[tuple[str, float, str]]:
    return [(r[0], (r[1] - T0) / S, r[4]) for r in kept.rows]


def test_namespace():
    assert metrics.NAMESPACE == "realtime_analytics"


@pytest.mark.parametrize(
    ("first", "later", "horizon", "duplicate"),
    [
        (None, 0, 10, False),  # never seen
        (100, 100, 10, True),  # same instant
        (100, 110, 10, True),  # exactly at the horizon: inclusive
        (100, 90, 10, True),  # earlier event time, within the horizon
        (100, 111, 10, False),  # just beyond
        (100, 89, 10, False),  # just beyond, earlier
        (100, 100, 0, True),  # horizon 0: only the same instant
        (100, 101, 0, False),
        (0, 0, 0, True),  # a first-seen time of 0 is still "seen"
    ],
)
def test_is_duplicate_rule(first, later, horizon, duplicate):
    assert is_duplicate(first, later, horizon) is duplicate


# --- the rule on rows -------------------------------------------------------------------------------------------


def test_keep_first_rule_and_count():
    rows = [
        row("a", 0),
        row("a", 5),  # within the horizon: dropped
        row("a", 600),  # exactly the horizon after the first: dropped
        row("b", 0),
        row("c", 100),
        row("c", 701),  # beyond the horizon of the first (kept), and so the new first
        row("c", 1000),  # within the horizon of 701: dropped
        row("c", 1400),  # 699 s after 701: kept
    ]
    pending: dict[str, int] = {}
    kept, dropped = keep_first(rows, {}, pending, HORIZON_S * S)
    assert sorted((r[0], (r[1] - T0) // S) for r in kept) == [("a", 0), ("b", 0), ("c", 100), ("c", 701), ("c", 1400)]
    assert dropped == 3
    assert pending == {"a": T0, "b": T0, "c": T0 + 1400 * S}


def test_within_a_batch_the_kept_copy_does_not_depend_on_order():
    rows = [row("x", 50, "late"), row("x", 10, "early"), row("x", 30, "mid"), row("x", 10, "tie", 2), row("y", 1)]
    results = {
        tuple(sorted(r[:6] for r in keep_first(list(order), {}, {}, HORIZON_S * S)[0]))
        for order in itertools.permutations(rows)
    }
    assert results == {(row("x", 10, "early")[:6], row("y", 1)[:6])}  # ties broken by what the aggregates see


def test_keep_first_judges_against_the_state_and_leaves_it_alone_when_it_throws(monkeypatch):
    state = {"a": T0}
    pending: dict[str, int] = {}
    kept, dropped = keep_first([row("a", 10), row("b", 10)], state, pending, HORIZON_S * S)
    assert [r[0] for r in kept] == ["b"] and dropped == 1
    monkeypatch.setattr(dedup, "is_duplicate", lambda *args: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        keep_first([row("c", 10)], state, pending, HORIZON_S * S)
    assert pending == {"b": T0 + 10 * S} and state == {"a": T0}


def test_shards_are_stable_and_rows_round_trip():
    assert [shard_of(i) for i in ("e-1", "e-2", "é", "😀")] == [shard_of(i) for i in ("e-1", "e-2", "é", "😀")]
    assert all(0 <= shard_of(f"id-{n}") < DEDUP_SHARDS for n in range(100))
    assert len({shard_of(f"id-{n}") for n in range(1000)}) == DEDUP_SHARDS
    rows = [row("a", 1, value=-0.0), row("b", 2, value=2**63 - 1, key="k"), row("c", 3, value=1.5)]
    rows.append(("d", T0, "click", None, "u", 7, -(2**63), b"\xff\x00", {"attributes": {"k": "v"}, "n": None}))
    assert unpack_rows(pack_rows(batch(*rows))) == batch(*rows)
    big = batch(*rows, row("e", 4, value=10**300))  # beyond msgpack's 64 bits: still exact
    assert unpack_rows(pack_rows(big)) == big
    assert type(unpack_rows(pack_rows(batch(*rows))).rows[0][5]) is float


# --- the keyed-state DoFn, with the state of one shard held here -------------------------------------------------


class _Bag:
    def __init__(self) -> None:
        self.items: list[bytes] = []

    def read(self):
        return list(self.items)

    def add(self, item: bytes) -> None:
        self.items.append(item)

    def clear(self) -> None:
        self.items = []


class _Value:
    def __init__(self) -> None:
        self.value = None

    def read(self):
        return self.value

    def write(self, value) -> None:
        self.value = value


class _Timer:
    def __init__(self) -> None:
        self.at: Timestamp | None = None

    def set(self, at: Timestamp) -> None:
        self.at = at


class Shard:
    """The runner's side of one shard: its bag, token and timer."""

    def __init__(self) -> None:
        self.seen, self.token, self.timer = _Bag(), _Value(), _Timer()

    def process(self, dofn, *rows: Row) -> list[str]:
        outputs = list(dofn.process((0, pack_rows(batch(*rows))), self.seen, self.token, self.timer))
        return [r[0] for out in outputs if isinstance(out, RowBatch) for r in out.rows]

    def fire(self, dofn) -> None:
        dofn.expire(0, self.timer.at, self.seen, self.token, self.timer)


def worker(expire: bool = True) -> dedup._KeepFirstDoFn:
    dofn = dedup._KeepFirstDoFn(HORIZON_S * S, expire)
    dofn.setup()
    return dofn


def test_two_workers_on_one_shard_see_each_others_ids():
    shard, a, b = Shard(), worker(), worker()
    assert shard.process(a, row("x", 0), row("y", 0)) == ["x", "y"]
    assert shard.process(b, row("x", 5), row("z", 5)) == ["z"]  # b reads what a wrote
    assert shard.process(a, row("z", 6), row("w", 6)) == ["w"]  # a's own ids are stale: it reads b's write
    assert shard.process(b, row("w", 7), row("y", 7)) == []


def test_a_retried_bundle_sees_the_state_as_it_was_before_it():
    shard, a = Shard(), worker()
    shard.process(a, row("x", 0))
    before = copy.deepcopy(shard)
    assert shard.process(a, row("y", 1)) == ["y"]
    shard.seen, shard.token, shard.timer = before.seen, before.token, before.timer  # the runner rolls it back
    assert shard.process(a, row("y", 1)) == ["y"]  # kept again: the failed attempt left nothing behind
    assert shard.process(a, row("y", 2), row("x", 3)) == []


def test_the_expiry_timer_drops_the_ids_of_past_horizons_only():
    shard, a = Shard(), worker()
    shard.process(a, row("old", 0))
    assert shard.timer.at == Timestamp(micros=T0 + HORIZON_S * S)  # first expiry, on a quarter-horizon step
    shard.process(a, row("new", 500))
    shard.fire(a)  # the watermark passed 600 s: "old" is forgotten, "new" (seen at 500 s) is not
    assert shard.timer.at == Timestamp(micros=T0 + 1200 * S)  # 500 + 600 = 1100, rounded up to a 150 s step
    assert shard.process(a, row("old", 650), row("new", 650)) == ["old"]
    assert len(shard.seen.items) == 2  # the compacted ids, then the write of "old"


def test_bounded_input_sets_no_timer():
    shard, a = Shard(), worker(expire=False)
    shard.process(a, row("x", 0))
    assert shard.timer.at is None


# --- in pipelines -------------------------------------------------------------------------------------------------

# Same id within the horizon (dropped), outside it (kept), different ids (kept), repeats of repeats.
ROWS = [
    row("a", 0, "first"),
    row("a", 5, "repeat"),  # within the horizon: dropped
    row("a", 600, "edge"),  # exactly the horizon after the first: dropped
    row("b", 0, "b"),
    row("b", 0, "b"),  # dropped
    row("c", 10, "c"),
    row("d", 100, "d1"),
    row("d", 100 + HORIZON_S + 1, "d2"),  # outside the horizon (event time): kept
]
KEPT = [("a", 0.0, "first"), ("b", 0.0, "b"), ("c", 10.0, "c"), ("d", 100.0, "d1"), ("d", 701.0, "d2")]


@pytest.mark.parametrize("batch_rows", [1, 3, len(ROWS)])
def test_batch_drops_repeats_within_horizon_and_counts_them(batch_rows):
    batches = [batch(*ROWS[i : i + batch_rows]) for i in range(0, len(ROWS), batch_rows)]
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    kept = (p | beam.Create(batches) | DeduplicateEvents(HORIZON_S, expire=False)).rows | beam.FlatMap(summary)
    assert_that(kept, equal_to(KEPT))
    result = p.run()
    result.wait_until_finish()
    found = counters(result)
    assert found.get(metrics.DUPLICATES) == 3
    assert found.get(metrics.DEDUP_STATE_IDS) == 4  # bounded input keeps its ids to the end


def test_batch_different_ids_all_kept():
    batches = [batch(*(row(f"id-{i}", i % 7) for i in range(j, j + 50))) for j in range(0, 200, 50)]
    p = beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([]))
    kept = (p | beam.Create(batches) | DeduplicateEvents(HORIZON_S, expire=False)).rows
    assert_that(kept | beam.FlatMap(lambda b: b.rows) | beam.combiners.Count.Globally(), equal_to([200]))
    result = p.run()
    result.wait_until_finish()
    assert counters(result).get(metrics.DUPLICATES, 0) == 0


def _stamped(*rows: Row) -> beam.window.TimestampedValue:
    return beam.window.TimestampedValue(batch(*rows), Timestamp(micros=min(r[6] for r in rows)))


def _run_stream(stream: test_stream.TestStream):
    fix_streaming_direct_runner_metrics()
    options = PipelineOptions([])
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(runner=BundleBasedDirectRunner(), options=options)
    kept = (p | stream | DeduplicateEvents(HORIZON_S, expire=True)).rows | beam.FlatMap(summary)
    return p, kept


def test_streaming_drops_repeats_within_horizon_and_counts_them():
    stream = (
        test_stream.TestStream(coder=RowBatchCoder())
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([_stamped(*ROWS[:3])])
        .advance_watermark_to(Timestamp(micros=T0 + 5 * S))
        .add_elements([_stamped(*ROWS[3:6])])
        .advance_processing_time(10)
        .add_elements([_stamped(ROWS[6])])
        .advance_watermark_to(Timestamp(micros=T0 + 200 * S))
        .add_elements([_stamped(ROWS[7])])
        # A redelivery of "c" within the horizon, in a later bundle: dropped.
        .add_elements([_stamped(row("c", 12, "c-again"))])
        .advance_watermark_to_infinity()
    )
    p, kept = _run_stream(stream)
    assert_that(kept, equal_to(KEPT))
    result = p.run()
    result.wait_until_finish()
    found = counters(result)
    assert found.get(metrics.DUPLICATES) == 4
    assert found.get(metrics.DEDUP_STATE_IDS, 0) == 0  # the end of the stream expired every id


def test_streaming_state_expires_after_the_horizon():
    # Once the watermark passes first-seen + horizon, the id's state is gone: a new event with that id (outside the
    # horizon by event time) is kept, and a repeat of *that* one is dropped again.
    stream = (
        test_stream.TestStream(coder=RowBatchCoder())
        .advance_watermark_to(Timestamp(micros=T0))
        .add_elements([_stamped(row("z", 0, "z1"))])
        .advance_watermark_to(Timestamp(micros=T0 + (HORIZON_S + 100) * S))
        .add_elements([_stamped(row("z", HORIZON_S + 200, "z2"))])
        .add_elements([_stamped(row("z", HORIZON_S + 250, "z2-again"))])
        .add_elements([_stamped(row("y", HORIZON_S + 200, "y"))])
        .advance_watermark_to_infinity()
    )
    p, kept = _run_stream(stream)
    assert_that(kept, equal_to([("z", 0.0, "z1"), ("z", 800.0, "z2"), ("y", 800.0, "y")]))
    result = p.run()
    result.wait_until_finish()
    assert counters(result).get(metrics.DUPLICATES) == 1
