"""distinct_users (HLL++ via the Accumulator and DistinctSketch) stays within 2 % of the exact count (±1 below 50).

Checked against exact counts with realistic user ids (several id styles, repeats of the same users), in one pass
and across merges of partial accumulators: plain ``merge_accumulators``, pickling round trips and Beam's own
accumulator coder, in every merge order.
"""

from __future__ import annotations

import base64
import itertools
import pickle
import random

import pytest

from transforms.aggregate import Accumulator, MergeAggregatesFn, aggregate_row
from transforms.records import Row
from transforms.sketch import DistinctSketch, merge_sketches

CARDINALITIES = [1, 2, 10, 49, 50, 100, 1_000, 10_000, 50_000, 200_000]


def within_contract(estimate: int, exact: int) -> bool:
    """The documented accuracy: ±1 below 50 distinct users, else within 2 %."""
    return abs(estimate - exact) <= (1 if exact < 50 else 0.02 * exact)


def user_ids(n: int, seed: int = 0) -> list[str]:
    """``n`` distinct user ids in the styles real producers send: prefixed numbers, UUIDs, e-mails, hex, unicode."""
    rng = random.Random(seed)
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        style = rng.randrange(5)
        bits = rng.getrandbits(64)
        if style == 0:
            uid = f"user-{bits % 10_000_000_000}"
        elif style == 1:
            h = f"{bits:016x}{rng.getrandbits(64):016x}"
            uid = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"
        elif style == 2:
            uid = f"first.last{bits % 1_000_000_000}@example.com"
        elif style == 3:
            uid = f"{bits:x}"
        else:
            uid = f"nutzer-ä-{bits % 100_000_000}"
        if uid not in seen:
            seen.add(uid)
            ids.append(uid)
    return ids


def event(user: str, n: int = 0) -> Row:
    t = 1_704_067_200_000_000
    return (f"e{n}", t, "click", "/p", user, 1, t, b"", None)


def accumulate(users) -> Accumulator:
    acc = Accumulator()
    acc.add_rows([event(u) for u in users])
    return acc


def with_repeats(ids: list[str], seed: int = 0) -> list[str]:
    """Every id at least once, a third of them again, a few many times; shuffled."""
    rng = random.Random(seed)
    stream = ids + ids[: len(ids) // 3] + ids[:3] * 20
    rng.shuffle(stream)
    return stream


def one_pass(stream: list[str]) -> tuple[int, float, int, bytes]:
    return MergeAggregatesFn().extract_output(accumulate(stream))


@pytest.mark.parametrize("exact", CARDINALITIES)
def test_estimate_within_contract_with_repeats(exact):
    ids = user_ids(exact, seed=exact)
    stream = with_repeats(ids, seed=exact)
    count, _, estimate, sketch = one_pass(stream)[:4]
    assert count == len(stream)
    assert within_contract(estimate, exact), (exact, estimate)
    # The sketch bytes stand on their own: decoding them gives the same estimate (what HLL_COUNT.EXTRACT reads).
    assert DistinctSketch.from_bytes(sketch).estimate() == estimate


def test_one_million_with_distinct_sketch():
    exact = 1_000_000
    rng = random.Random(1_000_000)
    ids = [f"user-{rng.getrandbits(63):x}" for _ in range(exact)]
    assert len(set(ids)) == exact
    sketch = DistinctSketch.of(ids)
    sketch.add(ids[0])  # a repeat changes nothing
    estimate = sketch.estimate()
    assert within_contract(estimate, exact), estimate
    assert DistinctSketch.from_bytes(sketch.to_bytes()).estimate() == estimate
    # Two overlapping halves merged in either order: the same bytes, the same estimate.
    halves = [DistinctSketch.of(ids[:600_000]).to_bytes(), DistinctSketch.of(ids[400_000:]).to_bytes()]
    forward, backward = merge_sketches(halves), merge_sketches(reversed(halves))
    assert forward.to_bytes() == backward.to_bytes()
    assert within_contract(forward.estimate(), exact), forward.estimate()


def _split(stream: list[str], parts: int, seed: int) -> list[list[str]]:
    """Distributes a stream over ``parts`` bundles at random (a user may land in several)."""
    rng = random.Random(seed)
    bundles: list[list[str]] = [[] for _ in range(parts)]
    for user in stream:
        bundles[rng.randrange(parts)].append(user)
    return bundles


def _partials(bundles: list[list[str]]):
    return [accumulate(bundle) for bundle in bundles]


@pytest.mark.parametrize("exact", [1, 2, 10, 49, 50, 1_000, 10_000, 50_000, 200_000])
@pytest.mark.parametrize("transport", ["direct", "pickle", "beam_coder"])
def test_merged_accumulators_equal_one_pass(exact, transport):
    ids = user_ids(exact, seed=exact + 1)
    stream = with_repeats(ids, seed=exact + 1)
    fn = MergeAggregatesFn()
    parts = _partials(_split(stream, 5, seed=exact))
    if transport == "pickle":
        parts = [pickle.loads(pickle.dumps(p)) for p in parts]
    elif transport == "beam_coder":
        coder = fn.get_accumulator_coder()
        parts = [coder.decode(coder.encode(p)) for p in parts]
    # Beam merges in trees: some partials first, then the partial results with a fresh accumulator.
    left = fn.merge_accumulators(parts[:2])
    right = fn.merge_accumulators([fn.create_accumulator(), *parts[2:]])
    merged = fn.extract_output(fn.merge_accumulators([left, right]))
    reference = one_pass(stream)
    assert merged == reference
    assert within_contract(merged[2], exact), (exact, merged[2])
    assert DistinctSketch.from_bytes(merged[3]).estimate() == merged[2]


def test_merge_order_does_not_change_the_bytes():
    # Sizes span the sparse and the normal representation (the sparse one turns normal at a few thousand).
    ids = user_ids(60_000, seed=11)
    sizes, start, bundles = (3, 800, 9_000, 40_000), 0, []
    for size in sizes:
        bundles.append(ids[start : start + size] + ids[start : start + size // 2] + ids[:5])  # repeats, overlaps
        start += size
    frozen = [pickle.dumps(p) for p in _partials(bundles)]
    fn = MergeAggregatesFn()
    outputs = {
        fn.extract_output(fn.merge_accumulators([pickle.loads(p) for p in perm]))
        for perm in itertools.permutations(frozen)
    }
    assert len(outputs) == 1
    (output,) = outputs
    assert output == one_pass([u for bundle in bundles for u in bundle])
    assert within_contract(output[2], sum(sizes))


def test_sketch_bytes_merge_order_with_merge_sketches():
    ids = user_ids(30_000, seed=5)
    pieces = [DistinctSketch.of(ids[i::3] + ids[:100]).to_bytes() for i in range(3)]
    results = {merge_sketches(perm).to_bytes() for perm in itertools.permutations(pieces)}
    assert len(results) == 1
    merged = DistinctSketch.from_bytes(results.pop())
    assert merged.estimate() == DistinctSketch.of(ids).estimate()
    assert within_contract(merged.estimate(), 30_000)


def test_row_sketch_decodes_to_the_row_estimate():
    from apache_beam.transforms.window import IntervalWindow
    from apache_beam.utils.windowed_value import PaneInfo, PaneInfoTiming

    ids = user_ids(1234, seed=9)
    result = one_pass(with_repeats(ids))
    row = aggregate_row(
        ("click", None), result, IntervalWindow(0, 60), PaneInfo(True, True, PaneInfoTiming.ON_TIME, 0, 0), 0
    )
    decoded = DistinctSketch.from_bytes(base64.b64decode(row["distinct_users_sketch"]))
    assert decoded.estimate() == row["distinct_users"]
    assert within_contract(row["distinct_users"], 1234)
