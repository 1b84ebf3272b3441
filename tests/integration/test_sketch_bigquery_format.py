"""Our distinct-count sketches are in the format BigQuery's ``HLL_COUNT.*`` functions read.

BigQuery's HLL_COUNT functions use ZetaSketch HLL++ protos, and Google's Java ``com.google.zetasketch``
library is the reference implementation of that format. These tests hand the bytes that
``transforms.sketch`` (zetasketch-py) writes to that Java library, and the other way round:

* Java reads every Python sketch (sparse and normal) and gets Python's estimate exactly, and its own
  re-serialization of the parsed state is byte-identical to what Python wrote;
* Java merges of Python sketches equal ``merge_sketches`` (estimate and bytes);
* Java ``buildForStrings()`` sketches of the same values are byte-identical to Python's;
* Python reads and merges Java-built sketches.

Byte equality holds in every case here, so it is asserted outright rather than only "equal estimates".
Needs ``java`` and ``mvn``; the Java CLI is built once into ``.cache/`` (tests/interop/zetasketch_java.py).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from tests.interop.zetasketch_java import ZetaSketchJava
from transforms.sketch import NORMAL_PRECISION, SPARSE_PRECISION, DistinctSketch, merge_sketches

pytestmark = pytest.mark.integration

# Cardinality -> the representation ZetaSketch must pick. At precision 15 a sketch stays sparse until its
# sparse encoding outgrows 0.75 * 2**15 bytes (~22,500 of these ids), so 20,000 is still sparse.
CARDINALITIES = {
    0: "sparse",
    1: "sparse",
    2: "sparse",
    10: "sparse",
    49: "sparse",
    50: "sparse",
    1_000: "sparse",
    20_000: "sparse",
    200_000: "normal",
}
POOL_SIZE = 300_000

# Each case is a list of sketches, each sketch the ids[start:stop] slice; the order matters to Java (it
# merges into the first sketch) and so is varied on purpose.
MERGE_CASES: dict[str, list[tuple[int, int]]] = {
    "sparse_only": [(0, 1), (1, 3), (3, 13), (13, 62)],
    "empty_then_sparse": [(0, 0), (0, 1_000)],
    "sparse_then_normal": [(0, 50), (50, 1_050), (1_050, 201_050)],
    "normal_then_sparse": [(1_050, 201_050), (0, 50), (50, 1_050)],
    "overlapping_sparse": [(0, 15_000), (10_000, 20_000), (19_000, 19_100)],
    "sparse_pair_overflows_to_normal": [(0, 15_000), (15_000, 30_000)],
    "overlapping_normal": [(0, 200_000), (100_000, 300_000)],
    "overlapping_normal_and_sparse": [(0, 200_000), (150_000, 160_000), (199_990, 200_010)],
    "same_sketch_three_times": [(0, 1_000)] * 3,
}


def _representation(info: dict[str, str]) -> str:
    sparse, normal = info["has_sparse_data"] == "true", info["has_data"] == "true"
    assert sparse != normal, f"a sketch must hold exactly one representation: {info}"
    return "sparse" if sparse else "normal"


def _assert_plausible(estimate: int, true_count: int) -> None:
    # Both sides agreeing is the point; this only guards against both being wrong the same way
    # (e.g. hashing something other than the string). 2 % is ~4 standard errors at precision 15.
    assert abs(estimate - true_count) <= max(2, 0.02 * true_count), (estimate, true_count)


@pytest.fixture(scope="module")
def java() -> Iterator[ZetaSketchJava]:
    with ZetaSketchJava() as checker:
        yield checker


@pytest.fixture(scope="module")
def user_ids() -> list[str]:
    rng = random.Random(20240611)  # fixed seed: reproducible sketches and failure messages
    ids = [f"user-{rng.getrandbits(64):016x}" for _ in range(POOL_SIZE)]
    assert len(set(ids)) == POOL_SIZE
    return ids


@pytest.fixture(scope="module")
def python_sketch(user_ids: list[str]) -> Callable[[int, int], bytes]:
    cache: dict[tuple[int, int], bytes] = {}

    def build(start: int, stop: int) -> bytes:
        if (start, stop) not in cache:
            cache[start, stop] = DistinctSketch.of(user_ids[start:stop]).to_bytes()
        return cache[start, stop]

    return build


@pytest.mark.parametrize("n", list(CARDINALITIES))
def test_java_reads_python_sketch(java: ZetaSketchJava, python_sketch: Callable[[int, int], bytes], n: int) -> None:
    data = python_sketch(0, n)
    python_estimate = DistinctSketch.from_bytes(data).estimate()

    info = java.info(data)
    assert info["type"] == "HYPERLOGLOG_PLUS_UNIQUE"
    assert info["encoding_version"] == "2"
    assert info["num_values"] == str(n)
    assert (info["precision"], info["sparse_precision"]) == (str(NORMAL_PRECISION), str(SPARSE_PRECISION))
    assert info["unknown_fields"] == "0"
    assert _representation(info) == CARDINALITIES[n]

    assert java.estimate([data]) == [python_estimate]
    _assert_plausible(python_estimate, n)
    # Java parses the state and writes it back byte for byte: no field it would drop, add or re-encode.
    assert java.reserialize(data) == data


@pytest.mark.parametrize("n", list(CARDINALITIES))
def test_java_builds_identical_bytes_and_python_reads_them(
    java: ZetaSketchJava, user_ids: list[str], python_sketch: Callable[[int, int], bytes], n: int
) -> None:
    java_data = java.build(user_ids[:n], NORMAL_PRECISION, SPARSE_PRECISION)
    assert java_data == python_sketch(0, n)
    assert DistinctSketch.from_bytes(java_data).estimate() == java.estimate([java_data])[0]


def test_sparse_to_normal_switch_happens_at_the_same_value(java: ZetaSketchJava, user_ids: list[str]) -> None:
    # The switch is where an implementation is most likely to differ (Java buffers sparse entries and
    # converts on flush), so find Python's switch point and check Java builds the same bytes either side.
    def python_is_sparse(n: int) -> bool:
        return _representation(java.info(DistinctSketch.of(user_ids[:n]).to_bytes())) == "sparse"

    last_sparse, first_normal = 20_000, 200_000
    assert python_is_sparse(last_sparse) and not python_is_sparse(first_normal)
    while first_normal - last_sparse > 1:
        middle = (last_sparse + first_normal) // 2
        if python_is_sparse(middle):
            last_sparse = middle
        else:
            first_normal = middle

    for n in (last_sparse, first_normal):
        python_data = DistinctSketch.of(user_ids[:n]).to_bytes()
        java_data = java.build(user_ids[:n], NORMAL_PRECISION, SPARSE_PRECISION)
        assert java_data == python_data, n
        assert java.estimate([python_data]) == [DistinctSketch.from_bytes(python_data).estimate()]


def test_non_ascii_and_edge_case_strings(java: ZetaSketchJava) -> None:
    # BigQuery hashes a STRING's UTF-8 bytes; "á" precomposed and "a" + combining accent are distinct.
    values = ["", " ", "\t", "line\nbreak", "ユーザー-1", "üser", "emoji-😀", "a\u0301", "\u00e1"]
    values.append("x" * 1_000)
    python_data = DistinctSketch.of(values).to_bytes()
    assert java.build(values) == python_data
    assert java.estimate([python_data]) == [len(values)]


@pytest.mark.parametrize("case", list(MERGE_CASES))
def test_java_merge_of_python_sketches_matches_merge_sketches(
    java: ZetaSketchJava, python_sketch: Callable[[int, int], bytes], case: str
) -> None:
    ranges = MERGE_CASES[case]
    sketches = [python_sketch(start, stop) for start, stop in ranges]
    true_count = len(set().union(*(range(start, stop) for start, stop in ranges)))

    java_estimate, java_data = java.merge(sketches)
    python_merged = merge_sketches(sketches)

    assert java_estimate == python_merged.estimate()
    assert java_data == python_merged.to_bytes()
    _assert_plausible(java_estimate, true_count)


@pytest.mark.parametrize("case", list(MERGE_CASES))
def test_python_merges_java_built_sketches(
    java: ZetaSketchJava,
    user_ids: list[str],
    python_sketch: Callable[[int, int], bytes],
    case: str,
) -> None:
    ranges = MERGE_CASES[case]
    java_sketches = [java.build(user_ids[start:stop]) for start, stop in ranges]
    # Alternate the writer so every merge crosses implementations in both directions.
    mixed = [
        java_sketch if i % 2 else python_sketch(start, stop)
        for i, (java_sketch, (start, stop)) in enumerate(zip(java_sketches, ranges, strict=True))
    ]

    python_of_java = merge_sketches(java_sketches)
    java_of_java_estimate, java_of_java = java.merge(java_sketches)
    assert python_of_java.estimate() == java_of_java_estimate
    assert python_of_java.to_bytes() == java_of_java

    python_of_mixed = merge_sketches(mixed)
    java_of_mixed_estimate, java_of_mixed = java.merge(mixed)
    assert python_of_mixed.estimate() == java_of_mixed_estimate == java_of_java_estimate
    assert python_of_mixed.to_bytes() == java_of_mixed == java_of_java
