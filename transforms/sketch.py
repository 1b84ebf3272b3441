"""Mergeable distinct-count sketches in the format BigQuery's ``HLL_COUNT.*`` functions read.

The bytes are ZetaSketch HyperLogLog++ protos (what ``HLL_COUNT.INIT`` produces), so a sketch written by this
pipeline can be merged in SQL: ``HLL_COUNT.MERGE(distinct_users_sketch)`` rolls minutes up to hours.

One precision is used everywhere: zetasketch-py mis-merges a lower-precision sparse sketch into a
higher-precision one, and BigQuery itself only merges sketches of equal precision cleanly.
"""

from __future__ import annotations

from collections.abc import Iterable

from zetasketch_py import HyperLogLogPlusPlus

# BigQuery's default for HLL_COUNT.INIT(x) is precision 15; ZetaSketch's default sparse precision is p + 5.
NORMAL_PRECISION = 15
SPARSE_PRECISION = 20


class DistinctSketch:
    """A HyperLogLog++ sketch of string values; picklable (Beam coders pickle combiner accumulators)."""

    __slots__ = ("_hll",)

    def __init__(self, hll: HyperLogLogPlusPlus | None = None) -> None:
        self._hll = hll if hll is not None else HyperLogLogPlusPlus(str, NORMAL_PRECISION, SPARSE_PRECISION)

    @classmethod
    def of(cls, values: Iterable[str]) -> DistinctSketch:
        sketch = cls()
        for value in values:
            sketch.add(value)
        return sketch

    @classmethod
    def from_bytes(cls, data: bytes) -> DistinctSketch:
        return cls(HyperLogLogPlusPlus.from_bytes(bytes(data)))

    def add(self, value: str) -> None:
        self._hll.add(value)

    def add_all(self, values: Iterable[str]) -> None:
        add = self._hll.add
        for value in values:
            add(value)

    def merge(self, other: DistinctSketch | bytes) -> DistinctSketch:
        """Merges ``other`` into this sketch (in place) and returns ``self``."""
        data = other if isinstance(other, (bytes, bytearray)) else other.to_bytes()
        self._hll.merge(bytes(data))
        return self

    def estimate(self) -> int:
        return int(self._hll.result())

    def to_bytes(self) -> bytes:
        return bytes(self._hll.to_bytes())

    def __reduce__(self):
        return (DistinctSketch.from_bytes, (self.to_bytes(),))

    def __repr__(self) -> str:
        return f"DistinctSketch(estimate={self.estimate()})"


def merge_sketches(sketches: Iterable[bytes]) -> DistinctSketch:
    """Merges serialized sketches, the Python twin of ``HLL_COUNT.MERGE_PARTIAL``."""
    merged = DistinctSketch()
    for data in sketches:
        merged.merge(data)
    return merged
