"""Accumulator and MergeAggregatesFn (count, exact order-independent value_sum, sketch), accumulator pickling, the
output row format, and WindowEvents + WindowedAggregates in a batch pipeline."""

from __future__ import annotations

import base64
import itertools
import math
import pickle
import random
import re
import sys
from fractions import Fraction

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import IntervalWindow
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming
from hypothesis import given, settings
from hypothesis import strategies as st

import schemas
from transforms.aggregate import (
    Accumulator,
    MergeAggregatesFn,
    WindowedAggregates,
    aggregate_row,
    exact_partials,
    new_panes,
)
from transforms.records import Row, RowBatch
from transforms.sketch import DistinctSketch
from transforms.timefmt import parse_rfc3339_us
from transforms.windowing import WindowEvents, WindowSpec

S = 1_000_000
T0 = 1_704_067_200 * S  # 2024-01-01T00:00:00Z
RFC3339_Z = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6})?Z")


def ev(value=1, user="u1", event_type="click", key="/p", seconds=0.0, event_id="e") -> Row:
    when = T0 + int(seconds * S)
    return (event_id, when, event_type, key, user, value, when, b"{}", None)


def accumulate(rows) -> Accumulator:
    acc = Accumulator()
    acc.add_rows(list(rows))
    return acc


def exact_sum(values) -> float:
    """The correctly rounded sum of the exact values (what value_sum promises)."""
    return float(sum((Fraction(v) for v in values), Fraction(0)))


def aggregate(values, parts: int = 1, seed: int = 0, shuffle: bool = False) -> tuple[int, float, int, bytes]:
    """Adds ``values`` into ``parts`` pickled partial accumulators, merged in random order (MergeAggregatesFn)."""
    fn = MergeAggregatesFn()
    values = list(values)
    rng = random.Random(seed)
    if shuffle:
        rng.shuffle(values)
    accs = [fn.create_accumulator() for _ in range(parts)]
    for i, value in enumerate(values):
        (accs[rng.randrange(parts)] if parts > 1 else accs[0]).add_rows([ev(value, user=f"u{i % 7}")])
    accs = [pickle.loads(pickle.dumps(a)) for a in accs]
    rng.shuffle(accs)
    return fn.extract_output(fn.merge_accumulators(accs))[:4]


SUM_CASES = {
    "tenths": [0.1] * 10,
    "0.1+0.2+0.3": [0.1, 0.2, 0.3],
    "cancellation_floats": [1e16, 1.0, -1e16],
    "cancellation_mixed": [1e16, 1, -1e16],
    "cancellation_ints": [10**16, 1, -(10**16)],
    "negatives": [-0.1, -0.2, 0.3, -5, 7, -2.5e-3, 1e-300, -1e-300],
    "ints_only": [1, 2, 3, 99, -4],
    "big_and_tiny": [1e100, 1.0, -1e100, 1e-100],
    "subnormals": [5e-324, 5e-324, -1e-323, 2.2250738585072014e-308],
    "huge_ints": [2**70, 3, -(2**70), 0.5],
    "mixed_money": [19.99, 5, 0.01, 100, 3.3333, -19.99, 0.07, 12],
}


@pytest.mark.parametrize("values", list(SUM_CASES.values()), ids=list(SUM_CASES))
def test_value_sum_is_exact_and_order_independent(values):
    expected = exact_sum(values)
    results = {aggregate(values, parts=p, seed=seed, shuffle=True)[1] for p in (1, 3) for seed in range(6)}
    results |= {aggregate(perm)[1] for perm in itertools.islice(itertools.permutations(values), 50)}
    assert results == {expected}


def test_value_sum_well_known_cases():
    assert aggregate([0.1] * 10)[1] == 1.0  # naive float addition gives 0.9999999999999999
    assert aggregate([0.1, 0.2])[1] == 0.30000000000000004  # the exact sum of those two doubles, rounded
    assert aggregate([1e16, 1, -1e16])[1] == 1.0
    assert aggregate([-1.5, -2, 0.25])[1] == -3.25
    assert aggregate([])[1] == 0.0


def test_value_sum_large_random_mix_matches_exact_sum():
    rng = random.Random(7)
    values = []
    for _ in range(3000):
        kind = rng.randrange(4)
        if kind == 0:
            values.append(rng.randrange(-(10**6), 10**6))
        elif kind == 1:
            values.append(round(rng.uniform(-1000, 1000), 2))
        elif kind == 2:
            values.append(rng.uniform(-1, 1) * 10 ** rng.randrange(-20, 20))
        else:
            values.append(rng.choice([1e16, -1e16, 0.1, 3]))
    expected = exact_sum(values)
    assert {aggregate(values, parts=p, seed=s, shuffle=True)[1] for p in (1, 4, 9) for s in range(3)} == {expected}


def test_value_sum_is_rounded_once():
    # An int sum above 2**53 plus a float: rounding the int to a double first, then adding, rounds twice.
    values = [2**53 + 1, 0.5]
    assert aggregate(values)[1] == exact_sum(values) == 2.0**53 + 2


def test_value_sum_beyond_double_range_does_not_crash():
    # Each value is valid (a finite double); the sum is not representable: it saturates, it never fails the job.
    assert aggregate([1e308, 1e308])[1] == math.inf
    assert aggregate([-1e308, -1e308], parts=2)[1] == -math.inf
    assert aggregate([10**308, 10**308])[1] == math.inf
    # ...and an intermediate overflow that cancels out again is still summed exactly.
    assert aggregate([1e308, 1e308, -1e308])[1] == 1e308
    assert aggregate([sys.float_info.max, sys.float_info.max, -sys.float_info.max], parts=3, shuffle=True)[1] == (
        sys.float_info.max
    )


def test_count_and_distinct_users():
    events = [ev(1, user=f"u{i % 5}") for i in range(23)]
    count, value_sum, distinct, sketch = MergeAggregatesFn().extract_output(accumulate(events))[:4]
    assert (count, value_sum, distinct) == (23, 23.0, 5)
    assert DistinctSketch.from_bytes(sketch).estimate() == 5
    assert isinstance(value_sum, float)


def test_accumulator_pickle_round_trip_keeps_everything():
    acc = Accumulator()
    for i, value in enumerate([3, 0.1, 0.2, -7, 1e16, 2**60, -0.3]):
        acc.add_rows([ev(value, user=f"user-{i % 4}", seconds=i)])
    copy = pickle.loads(pickle.dumps(acc))
    assert (copy.count, copy.int_sum, copy.float_partials) == (acc.count, acc.int_sum, acc.float_partials)
    assert copy.sketch.to_bytes() == acc.sketch.to_bytes()
    assert copy.value_sum() == acc.value_sum()
    assert copy.sketch.estimate() == 4
    assert (
        (copy.newest_arrival_us, copy.newest_event_us)
        == (acc.newest_arrival_us, acc.newest_event_us)
        == (
            T0 + 6 * S,
            T0 + 6 * S,
        )
    )
    # The copy is independent and keeps working.
    copy.add_rows([ev(1, user="user-new")])
    assert (copy.count, acc.count) == (8, 7)
    assert copy.sketch.estimate() == 5 and acc.sketch.estimate() == 4
    # Beam's accumulator coder round trip as well.
    coder = MergeAggregatesFn().get_accumulator_coder()
    decoded = coder.decode(coder.encode(acc))
    assert MergeAggregatesFn().extract_output(decoded) == MergeAggregatesFn().extract_output(acc)


def test_empty_accumulator_round_trip_and_merge():
    fn = MergeAggregatesFn()
    empty = pickle.loads(pickle.dumps(fn.create_accumulator()))
    assert fn.extract_output(empty)[:3] == (0, 0.0, 0)
    one = fn.add_input(fn.create_accumulator(), accumulate([ev(2.5, user="x", seconds=3)]))
    assert fn.extract_output(fn.merge_accumulators([empty, one]))[:3] == (1, 2.5, 1)
    assert fn.extract_output(fn.merge_accumulators([one, empty])).newest_event_us == T0 + 3 * S


# --- aggregate_row -------------------------------------------------------------------------------------------------


def _window(start_s: float, end_s: float) -> IntervalWindow:
    return IntervalWindow(Timestamp(micros=T0 + int(start_s * S)), Timestamp(micros=T0 + int(end_s * S)))


def test_aggregate_row_fields_and_formats():
    result = MergeAggregatesFn().extract_output(accumulate([ev(1.5, "a"), ev(2, "b"), ev(0.5, "a")]))
    pane = PaneInfo(False, False, PaneInfoTiming.EARLY, 2, -1)
    row = aggregate_row(("click", "/home"), result, _window(60, 120), pane, T0 + 123_456)
    assert list(row) == list(schemas.bigquery_field_names(schemas.AGGREGATES_TABLE))
    assert row["window_start"] == "2024-01-01T00:01:00Z"
    assert row["window_end"] == "2024-01-01T00:02:00Z"
    assert (row["event_type"], row["key"]) == ("click", "/home")
    assert (row["event_count"], row["value_sum"], row["distinct_users"]) == (3, 4.0, 2)
    assert base64.b64decode(row["distinct_users_sketch"]) == result[3]
    assert DistinctSketch.from_bytes(base64.b64decode(row["distinct_users_sketch"])).estimate() == 2
    assert (row["pane_timing"], row["pane_index"], row["is_last_pane"]) == ("EARLY", 2, False)
    assert row["emitted_at"] == "2024-01-01T00:00:00.123456Z"
    for name in ("window_start", "window_end", "emitted_at"):
        assert RFC3339_Z.fullmatch(row[name]), row[name]
        assert parse_rfc3339_us(row[name]) is not None


@pytest.mark.parametrize(
    ("timing", "name"),
    [(PaneInfoTiming.EARLY, "EARLY"), (PaneInfoTiming.ON_TIME, "ON_TIME"), (PaneInfoTiming.LATE, "LATE")],
)
def test_aggregate_row_pane_timing(timing, name):
    pane = PaneInfo(False, timing == PaneInfoTiming.LATE, timing, 4, 1)
    row = aggregate_row(("t", None), (1, 1.0, 1, b"x"), _window(0, 60), pane, T0)
    assert (row["pane_timing"], row["pane_index"], row["is_last_pane"]) == (name, 4, timing == PaneInfoTiming.LATE)
    assert row["key"] is None
    assert row["distinct_users_sketch"] == "eA=="


def test_aggregate_row_fractional_times_are_utc_z():
    row = aggregate_row(
        ("t", "k"), (1, 1.0, 1, b""), _window(0.25, 1.5), PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0), T0 + 7
    )
    assert (row["window_start"], row["window_end"]) == ("2024-01-01T00:00:00.250Z", "2024-01-01T00:00:01.500Z")
    assert row["emitted_at"] == "2024-01-01T00:00:00.000007Z"


# --- WindowedAggregates in a batch pipeline ---------------------------------------------------------------------------


def _strip(row: dict) -> tuple:
    assert RFC3339_Z.fullmatch(row["emitted_at"])
    sketch = DistinctSketch.from_bytes(base64.b64decode(row["distinct_users_sketch"])).estimate()
    assert sketch == row["distinct_users"]
    return (
        row["window_start"],
        row["window_end"],
        row["event_type"],
        row["key"],
        row["event_count"],
        row["value_sum"],
        row["distinct_users"],
        row["pane_timing"],
        row["pane_index"],
        row["is_last_pane"],
    )


EVENTS = [
    ev(1, "a", "click", "/home", 5),
    ev(2, "b", "click", "/home", 59.999),
    ev(0.5, "a", "click", "/home", 30),
    ev(3, "a", "click", None, 10),
    ev(4, "c", "click", None, 20),
    ev(0.1, "a", "view", "/home", 1),
    ev(10, "d", "click", "/home", 60),  # the next window
    ev(0.2, "d", "view", None, 119),
    ev(7, "e", "click", "/home", -1),  # the previous window (2023)
]


def _expected(timing="ON_TIME"):
    return [
        ("2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z", "click", "/home", 3, 3.5, 2, timing, 0, True),
        ("2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z", "click", None, 2, 7.0, 2, timing, 0, True),
        ("2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z", "view", "/home", 1, 0.1, 1, timing, 0, True),
        ("2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z", "click", "/home", 1, 10.0, 1, timing, 0, True),
        ("2024-01-01T00:01:00Z", "2024-01-01T00:02:00Z", "view", None, 1, 0.2, 1, timing, 0, True),
        ("2023-12-31T23:59:00Z", "2024-01-01T00:00:00Z", "click", "/home", 1, 7.0, 1, timing, 0, True),
    ]


@pytest.mark.parametrize("batch_rows", [1, 3, 100])
def test_windowed_aggregates_after_window_events_batch(batch_rows):
    # The graph's own batch windowing: pre-aggregated per bundle, one final ON_TIME pane per window and group,
    # whatever the batches.
    spec = WindowSpec(size_s=60, allowed_lateness_s=600, early_firing_s=10)
    batches = [RowBatch("test", EVENTS[i : i + batch_rows]) for i in range(0, len(EVENTS), batch_rows)]
    with beam.Pipeline(runner=FnApiRunner(), options=PipelineOptions([])) as p:
        rows = (
            (p | beam.Create(batches) | WindowEvents(spec, streaming=False))["partials"]
            | WindowedAggregates()
            | beam.Map(_strip)
        )
        assert_that(rows, equal_to(_expected()))


def test_a_total_beyond_the_double_range_is_written_as_null():
    from apache_beam.transforms.window import IntervalWindow
    from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

    pane = PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0)
    row = aggregate_row(("click", None), (2, float("inf"), 1, b"s"), IntervalWindow(0, 60), pane, 0)
    assert row["value_sum"] is None and row["event_count"] == 2


# --- pre-aggregation ------------------------------------------------------------------------------------------

FLOATS = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([5e-324, -5e-324, 1.7976931348623157e308])


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.lists(FLOATS, max_size=30))
def test_exact_partials_sum_exactly(values):
    parts = exact_partials(values)
    if parts is not None:
        assert sum(map(Fraction, parts)) == sum(map(Fraction, values))


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.tuples(st.integers(0, 30) | FLOATS, st.sampled_from(["u1", "u2", "u3", "é"])), max_size=40))
def test_add_rows_is_adding_one_by_one(values):
    rows = [("e", 0, "click", None, user, value, 0, b"", None) for value, user in values]
    one_by_one, at_once = Accumulator(), Accumulator()
    for row in rows:
        one_by_one.add_rows([row])
    at_once.add_rows(rows)
    assert at_once.count == one_by_one.count
    assert at_once.value_sum() == one_by_one.value_sum()  # exact, or the same infinity beyond the double range
    assert at_once.sketch.to_bytes() == one_by_one.sketch.to_bytes()


def test_latency_buckets_are_cumulative():
    from apache_beam.metrics.metric import MetricsFilter
    from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline

    from transforms import metrics

    class _Sample(beam.DoFn):
        def setup(self):
            self._buckets = metrics.LatencyBuckets("t_ms")

        def process(self, value):
            self._buckets.update(value)

    with BeamTestPipeline() as p:
        _ = p | beam.Create([50, 100, 101, 2500, 10**9]) | beam.ParDo(_Sample())
    found = {
        c.key.metric.name: c.committed
        for c in p.result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))["counters"]
    }
    assert found["t_ms_le_100"] == 2 and found["t_ms_le_250"] == 3 and found["t_ms_le_3000"] == 4
    assert found["t_ms_le_inf"] == 5 and found.get(f"t_ms_le_{metrics.LATENCY_BUCKETS_MS[-1]}") == 4


def _pane(timing: int, index: int, count: int) -> tuple:
    """A pane of one window and group as the streaming ToRow step receives it (only the count matters here)."""
    return (0, 60_000_000, "click", "/a"), ((count,), (index == 0, False, timing, index, -1))


EARLY, ON_TIME, LATE = PaneInfoTiming.EARLY, PaneInfoTiming.ON_TIME, PaneInfoTiming.LATE


def test_a_late_pane_that_repeats_its_predecessor_is_dropped():
    on_time, closing = _pane(ON_TIME, 1, 4), _pane(LATE, 2, 4)
    assert new_panes({0: 2, 1: 4, 2: 4}, [closing]) == ([], [])
    # late data arrived: the count grew
    grown = _pane(LATE, 2, 5)
    assert new_panes({0: 2, 1: 4, 2: 5}, [grown]) == ([grown], [])
    # early and on-time panes are never held back, whatever their counts
    assert new_panes({0: 4, 1: 4}, [on_time]) == ([on_time], [])


def test_a_late_pane_that_comes_before_its_predecessor_waits_for_it():
    # Prism: the closing LATE pane (index 2) reached the step before the ON_TIME pane (index 1).
    closing, on_time = _pane(LATE, 2, 4), _pane(ON_TIME, 1, 4)
    assert new_panes({0: 2, 2: 4}, [closing]) == ([], [closing])
    # the ON_TIME pane arrives: it is emitted, and the waiting LATE pane turns out to repeat it
    assert new_panes({0: 2, 1: 4, 2: 4}, [closing, on_time]) == ([on_time], [])
    # had late data arrived in between, the waiting pane is emitted with it
    late = _pane(LATE, 2, 6)
    assert new_panes({0: 2, 1: 4, 2: 6}, [late, on_time]) == ([late, on_time], [])


def test_late_panes_in_a_row_are_each_compared_with_their_own_predecessor():
    second, third = _pane(LATE, 3, 7), _pane(LATE, 4, 7)
    counts = {0: 2, 1: 4, 2: 5, 3: 7, 4: 7}
    assert new_panes(counts, [third, second]) == ([second], [])


def test_a_late_first_pane_is_emitted_at_once():
    # a session window that late data grew or merged: its first pane is LATE, and it has no predecessor
    grown = _pane(LATE, 0, 3)
    assert new_panes({0: 3}, [grown]) == ([grown], [])
