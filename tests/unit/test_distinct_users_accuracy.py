"""distinct_users is within 2 % of the exact count (±1 below 50), at several cardinalities and across merges."""

from __future__ import annotations

import pickle
import random

import pytest

from transforms.aggregate import AggregateFn
from transforms.records import Event
from transforms.sketch import DistinctSketch, merge_sketches


def within_contract(estimate: int, exact: int) -> bool:
    return abs(estimate - exact) <= (1 if exact < 50 else 0.02 * exact)


def users(n: int, seed: int = 1) -> list[str]:
    rng = random.Random(seed)
    return [f"user-{rng.getrandbits(64):016x}" for _ in range(n)]


def event(user: str) -> Event:
    return Event("e", "click", user, 0, None, 1, None, None, b"", "t", None, 0)


@pytest.mark.parametrize("exact", [1, 2, 10, 49, 50, 100, 1_000, 10_000, 50_000, 200_000])
def test_aggregate_estimate_within_two_percent(exact):
    fn = AggregateFn()
    ids = users(exact)
    acc = fn.add_inputs(fn.create_accumulator(), (event(u) for u in ids + ids[: exact // 3]))  # repeats too
    count, _, estimate, sketch = fn.extract_output(acc)
    assert count == exact + exact // 3
    assert within_contract(estimate, exact), (exact, estimate)
    assert DistinctSketch.from_bytes(sketch).estimate() == estimate


@pytest.mark.parametrize("exact", [40, 5_000, 100_000])
def test_merged_partial_accumulators_match_one_pass(exact):
    fn = AggregateFn()
    ids = users(exact, seed=exact)
    parts = [fn.add_inputs(fn.create_accumulator(), (event(u) for u in ids[i::4])) for i in range(4)]
    parts = [pickle.loads(pickle.dumps(p)) for p in parts]  # as Beam ships them between stages
    merged = fn.merge_accumulators(parts)
    one_pass = fn.add_inputs(fn.create_accumulator(), (event(u) for u in ids))
    assert fn.extract_output(merged) == fn.extract_output(one_pass)
    assert within_contract(fn.extract_output(merged)[2], exact)


def test_one_million_and_merge_order():
    ids = users(1_000_000, seed=7)
    halves = [DistinctSketch.of(ids[:600_000]).to_bytes(), DistinctSketch.of(ids[400_000:]).to_bytes()]
    forward, backward = merge_sketches(halves), merge_sketches(reversed(halves))
    assert forward.to_bytes() == backward.to_bytes()
    assert within_contract(forward.estimate(), 1_000_000), forward.estimate()
