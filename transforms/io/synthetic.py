"""A synthetic event source with a realistic mix: skewed keys, bad, duplicate, late and too-late records.

``synthetic://?events=5000&rate=100&keys=20&users=500&bad=0.03&duplicates=0.02&late=0.02&too_late=0.01&seed=42``

Generation is deterministic for a given spec and independent of how it is split: events are generated in blocks
whose random streams are seeded from (seed, block). The same generator feeds the embedded demo, the tests and
the benchmarks.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import apache_beam as beam
import fastavro
import orjson
from apache_beam.transforms.periodicsequence import PeriodicImpulse
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

import schemas
from transforms.records import RecordBatch
from transforms.timefmt import format_rfc3339_us, parse_rfc3339_us

SCHEME = "synthetic"
BLOCK = 10_000
_US = 1_000_000
EVENT_TYPES = ("page_view", "click", "add_to_cart", "purchase", "search", "signup")


@dataclass(frozen=True)
class SyntheticSpec:
    events: int = 5000  # bounded: total records; unbounded: ignored
    rate: float = 100.0  # records per second (simulated in batch/replay, wall clock when unbounded)
    keys: int = 20  # distinct pages
    users: int = 500
    event_types: int = 4
    bad: float = 0.03
    duplicates: float = 0.02
    late: float = 0.02  # late, but within the allowed lateness
    too_late: float = 0.0  # beyond the allowed lateness (``too_late_by`` behind)
    too_late_by: int = 3600  # seconds
    late_by: int = 180  # seconds (upper bound; lower bound is a third of it)
    skew: float = 1.1  # Zipf exponent of page popularity
    seed: int = 42
    start: str = "2024-01-01T00:00:00Z"
    format: str = "json"
    mode: str = ""  # "" = bounded in batch, real-time unbounded in streaming; "replay" = simulated-clock stream
    duration: float = 0  # streaming, not replay: stop after this many wall-clock seconds (0 = run until stopped)

    @property
    def start_us(self) -> int:
        start = parse_rfc3339_us(self.start)
        if start is None:
            raise ValueError(f"synthetic start {self.start!r} is not an RFC 3339 timestamp")
        return start


def parse_synthetic_uri(uri: str) -> SyntheticSpec:
    """``synthetic://[name]?k=v&...`` -> SyntheticSpec; unknown or malformed parameters raise ValueError."""
    parts = urlsplit(uri)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a synthetic:// URI: {uri!r}")
    types = {f.name: f.type for f in fields(SyntheticSpec)}
    values: dict[str, Any] = {}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
        if name not in types:
            raise ValueError(f"unknown synthetic parameter {name!r}; known: {', '.join(sorted(types))}")
        kind = types[name]
        try:
            values[name] = int(raw) if kind == "int" else float(raw) if kind == "float" else raw
        except ValueError:
            raise ValueError(f"synthetic parameter {name}={raw!r} is not a valid {kind}") from None
    spec = replace(SyntheticSpec(), **values)
    for name in ("bad", "duplicates", "late", "too_late"):
        if not 0 <= getattr(spec, name) <= 1:
            raise ValueError(f"synthetic parameter {name} must be between 0 and 1")
    if spec.bad + spec.duplicates + spec.late + spec.too_late > 1:
        raise ValueError("synthetic shares bad + duplicates + late + too_late must not exceed 1")
    if spec.duration < 0:
        raise ValueError("synthetic duration must be >= 0 seconds")
    if spec.events < 0 or spec.rate <= 0 or spec.keys < 1 or spec.users < 1 or not 1 <= spec.event_types <= 6:
        raise ValueError("synthetic needs events >= 0, rate > 0, keys >= 1, users >= 1, 1 <= event_types <= 6")
    if spec.mode not in ("", "replay"):
        raise ValueError("synthetic mode must be empty or replay")
    if spec.format not in ("json", "avro"):
        raise ValueError("synthetic format must be json or avro")
    if parse_rfc3339_us(spec.start) is None:
        raise ValueError(f"synthetic start {spec.start!r} is not an RFC 3339 timestamp")
    return spec


def as_replay(uri: str) -> str:
    """The same synthetic stream, replayed on a simulated clock (``mode=replay``; needs ``events``)."""
    parts = urlsplit(uri)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "mode"]
    query.append(("mode", "replay"))
    return parts._replace(query=urlencode(query)).geturl()


# Bad records, one of each contract failure, drawn at random.
_BAD_JSON = (
    b'{"event_id": "x", "event_type": ',  # malformed_json
    b'{"event_id":"\xff\xfe","event_type":"click"}',  # invalid_encoding
    b'["not", "an", "object"]',  # not_an_object
    b'{"event_type":"click","user_id":"u1","event_time":"2024-01-01T00:00:00Z"}',  # missing_field event_id
    b'{"event_id":"b1","event_type":"click","user_id":42,"event_time":"2024-01-01T00:00:00Z"}',  # invalid_type
    b'{"event_id":"b2","event_type":"Click!","user_id":"u1","event_time":"2024-01-01T00:00:00Z"}',  # invalid_value
    b'{"event_id":"b3","event_type":"click","user_id":"u1","event_time":"yesterday"}',  # invalid_value
    b'{"event_id":"b4","event_type":"click","user_id":"u1","event_time":"1999-12-31T23:59:59Z"}',  # out of range
    b'{"event_id":"b5","event_type":"click","user_id":"u1","event_time":1700000000000,"value":"3"}',  # invalid_type
    b'{"event_id":"b6","event_type":"click","user_id":"u1","event_time":NaN}',  # malformed_json
)
_BAD_AVRO = (b"", b"\x02", b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x02a\x02b\x02c\x04")


def _page_weights(spec: SyntheticSpec) -> list[float]:
    return [1.0 / (k + 1) ** spec.skew for k in range(spec.keys)]


def _encode(obj: dict[str, Any], fmt: str) -> bytes:
    if fmt == "avro":
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schemas.event_avro_schema(), obj)
        return out.getvalue()
    return orjson.dumps(obj)


def generate_block(
    spec: SyntheticSpec, block: int, count: int | None = None, anchor_us: int | None = None
) -> Iterator[tuple[int, int, bytes]]:
    """(sequence number, arrival time µs, payload) for records ``block*BLOCK ...`` in arrival order.

    ``anchor_us`` is the arrival time of the block's first record (default: its place after ``spec.start``).
    """
    rng = random.Random(spec.seed * 1_000_003 + block)
    first = block * BLOCK
    last = first + (BLOCK if count is None else count)
    if spec.events and count is None:
        last = min(last, spec.events)
    step_us = _US / spec.rate
    anchor = spec.start_us + int(first * step_us) if anchor_us is None else anchor_us
    pages = [f"/page/{k}" for k in range(spec.keys)]
    weights = _page_weights(spec)
    types = EVENT_TYPES[: spec.event_types]
    recent: list[bytes] = []
    bad_pool = _BAD_AVRO if spec.format == "avro" else _BAD_JSON
    thresholds = (spec.bad, spec.bad + spec.duplicates, spec.bad + spec.duplicates + spec.late)
    too_late_after_us = spec.start_us + (spec.too_late_by + 2 * spec.late_by) * _US
    for seq in range(first, last):
        arrival = anchor + int((seq - first) * step_us)
        draw = rng.random()
        if draw < thresholds[0]:
            yield seq, arrival, bad_pool[rng.randrange(len(bad_pool))]
            continue
        if draw < thresholds[1] and recent:
            yield seq, arrival, recent[rng.randrange(len(recent))]  # a redelivery: same bytes, same event_id
            continue
        event_time = arrival - rng.randrange(0, 2 * _US)
        if draw < thresholds[2]:
            event_time = arrival - rng.randrange(spec.late_by * _US // 3, spec.late_by * _US)
        elif draw < thresholds[2] + spec.too_late and arrival > too_late_after_us:
            event_time = arrival - spec.too_late_by * _US
        obj: dict[str, Any] = {
            "event_id": f"e-{spec.seed}-{seq}",
            "event_type": types[rng.randrange(len(types))],
            "user_id": f"user-{rng.randrange(spec.users)}",
            "event_time": format_rfc3339_us(event_time) if seq % 4 else event_time // 1000,
            "page": rng.choices(pages, weights)[0],
            "value": rng.randrange(1, 100) if seq % 3 else round(rng.random() * 10, 2),
        }
        if seq % 5 == 0:
            obj["properties"] = {"country": ("de", "us", "in", "br")[seq % 4]}
        payload = _encode(obj, spec.format)
        recent.append(payload)
        if len(recent) > 50:
            recent.pop(0)
        yield seq, arrival, payload


def generate(spec: SyntheticSpec) -> Iterator[tuple[int, int, bytes]]:
    """All ``spec.events`` records, in arrival order."""
    for block in range((spec.events + BLOCK - 1) // BLOCK):
        yield from generate_block(spec, block)


def _batch_of_block(block: int, spec: SyntheticSpec, source: str) -> Iterator[RecordBatch]:
    generated = list(generate_block(spec, block))
    if generated:
        yield RecordBatch(
            source,
            [payload for _, _, payload in generated],
            [{"sequence": seq} for seq, _, _ in generated],
            arrivals=[arrival for _, arrival, _ in generated],
        )


class ReadSynthetic(beam.PTransform):
    """Bounded: ``events`` records, one ``RecordBatch`` per block. Unbounded (streaming): ``rate`` records/s forever
    (or for ``duration`` seconds), one ``RecordBatch`` per tick, stamped by wall clock."""

    def __init__(self, uri: str, streaming: bool = False, tick_s: float = 1.0) -> None:
        super().__init__()
        self._uri = uri
        self._spec = parse_synthetic_uri(uri)
        self._streaming = streaming
        self._tick_s = tick_s

    def expand(self, pbegin):
        spec = self._spec
        source = SCHEME
        if not self._streaming:
            blocks = list(range((spec.events + BLOCK - 1) // BLOCK))
            return (
                pbegin
                | "Blocks" >> beam.Create(blocks)
                | "Spread" >> beam.Reshuffle()
                | "Generate" >> beam.FlatMap(_batch_of_block, spec, source).with_output_types(RecordBatch)
            )
        per_tick = max(1, int(spec.rate * self._tick_s))
        tick_spec = replace(spec, rate=per_tick / self._tick_s)

        def tick_batch(tick: float) -> Iterator[beam.window.TimestampedValue]:
            # Each tick (PeriodicImpulse emits its time in seconds) is its own block of records, arriving over
            # the tick that starts at that wall-clock time.
            tick_us = Timestamp.of(tick).micros
            number = int(tick_us // int(self._tick_s * _US))
            generated = list(generate_block(tick_spec, number, per_tick, anchor_us=tick_us))
            batch = RecordBatch(
                source,
                [payload for _, _, payload in generated],
                [{"sequence": seq} for seq, _, _ in generated],
                arrivals=[arrival for _, arrival, _ in generated],
            )
            yield beam.window.TimestampedValue(batch, Timestamp(micros=tick_us))

        # Explicit start: PeriodicImpulse's default start is the time its module was imported.
        start = Timestamp.now()
        stop = start + spec.duration if spec.duration > 0 else MAX_TIMESTAMP
        return (
            pbegin
            | "Ticks" >> PeriodicImpulse(start_timestamp=start, stop_timestamp=stop, fire_interval=self._tick_s)
            | "Generate" >> beam.FlatMap(tick_batch).with_output_types(RecordBatch)
        )
