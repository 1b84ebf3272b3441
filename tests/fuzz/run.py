"""Fuzzing parse + validate with the seeded generator: every input must have exactly one outcome, in bounded memory.

Usage: ``python -m tests.fuzz.run [--inputs 1000000] [--seed 1] [--json]`` (``make fuzz`` runs a longer one).

Each input goes through the very functions the pipeline's DoFns call (``parse_record`` with the format's
decoder, then ``EventValidator.validate``), with the default ``--max_payload_bytes`` (1 MiB) and a fixed clock.
Checked per input: no exception; exactly one outcome, a valid ``Event`` or one ``Rejection`` whose code belongs
to the stage and format that produced it (payload-level codes have no field, field codes name a contract field);
a valid event meets the contract; ``payload_too_large`` exactly when the payload is over the limit; for JSON,
``invalid_encoding`` exactly when the payload is not UTF-8; the same bytes give the same outcome (every 16th
input is run twice); a JSON input the C fast path (``transforms/_fastjson.c``) accepts is the reference's very
``Event``, field by field and type by type. Memory: the process's resident set size, sampled as it goes, and
tracemalloc's peak for the heaviest inputs, measured in a second pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.fuzz.inputs import MAX_PAYLOAD, NOW_US, InputGenerator, fuzz_registry
from tests.unit.test_property_one_outcome import FIELD_CODES, FIELDS, check_event_meets_contract
from transforms import dead_letter as dl
from transforms.dead_letter import Rejection
from transforms.fast_json import NATIVE, FastJsonValidator, event_of
from transforms.parse import confluent_avro_decoder, decode_avro, decode_json, parse_record
from transforms.records import Event, SourceRecord
from transforms.validate import EventValidator

PAYLOAD_CODES = {
    "json": {dl.PAYLOAD_TOO_LARGE, dl.INVALID_ENCODING, dl.MALFORMED_JSON, dl.NOT_AN_OBJECT},
    "avro": {dl.PAYLOAD_TOO_LARGE, dl.INVALID_ENCODING, dl.MALFORMED_AVRO},
    "confluent-avro": {dl.PAYLOAD_TOO_LARGE, dl.INVALID_ENCODING, dl.MALFORMED_AVRO, dl.INCOMPATIBLE_SCHEMA},
}
MAX_MESSAGE = 1000
FORMATS = ("json", "avro", "confluent-avro")  # atheris_target: the first input byte picks one
SOURCE = "property"  # what check_event_meets_contract expects
RSS_EVERY = 20_000
WARM_UP = 50_000
HEAVY_SAMPLE = 300


@dataclass
class FuzzReport:
    inputs: int = 0
    seed: int = 0
    seconds: float = 0.0
    by_kind: Counter = field(default_factory=Counter)
    by_format: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)  # "valid" or the error code
    failures: list[str] = field(default_factory=list)  # the first few, with the input that failed
    failure_count: int = 0
    largest_input_bytes: int = 0
    deepest_nesting: int = 0
    rss_start_mb: float = 0.0
    rss_after_warm_up_mb: float = 0.0
    rss_peak_mb: float = 0.0
    rss_end_mb: float = 0.0
    heavy_traced: int = 0
    heavy_peak_mb: float = 0.0  # tracemalloc peak of the heaviest single input
    heavy_peak_ratio: float = 0.0  # that peak / its payload size

    @property
    def inputs_per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        dead = self.inputs - self.outcomes["valid"]
        return (
            f"fuzz: {self.inputs:,} inputs (seed {self.seed}) in {self.seconds:.1f} s "
            f"({self.inputs_per_second:,.0f}/s): "
            f"{self.outcomes['valid']:,} valid + {dead:,} dead letters, {self.failure_count} failures; "
            f"largest input {self.largest_input_bytes:,} bytes, deepest nesting {self.deepest_nesting:,}; "
            f"RSS {self.rss_start_mb:.0f} -> peak {self.rss_peak_mb:.0f} MB "
            f"(after warm-up {self.rss_after_warm_up_mb:.0f}, "
            f"end {self.rss_end_mb:.0f}); tracemalloc peak of one heavy input {self.heavy_peak_mb:.1f} MB "
            f"({self.heavy_peak_ratio:.1f}x its size)"
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["inputs_per_second"] = round(self.inputs_per_second)
        return out


class Harness:
    """parse_record + validate exactly as the pipeline chains them, with the checks of the module docstring."""

    def __init__(self) -> None:
        self.decoders = {
            "json": decode_json,
            "avro": decode_avro,
            "confluent-avro": confluent_avro_decoder(fuzz_registry()),
        }
        self.validator = EventValidator(clock=lambda: NOW_US)
        self.fast = (
            FastJsonValidator(max_payload_bytes=MAX_PAYLOAD, clock=lambda: NOW_US, implementation="native")
            if NATIVE
            else None
        )

    def outcome(self, payload: bytes, fmt: str) -> tuple[str, Event | Rejection]:
        record = SourceRecord(payload, SOURCE, None)
        decoded = parse_record(record, self.decoders[fmt], MAX_PAYLOAD)
        if type(decoded) is Rejection:
            return "parse", decoded
        if type(decoded) is not dict:
            raise AssertionError(f"the decoder returned {type(decoded).__name__}, not a dict or a Rejection")
        return "validate", self.validator.validate(decoded, record)

    def check(self, payload: bytes, fmt: str, again: bool) -> str:
        """The outcome's name ("valid" or the code); AssertionError if an invariant does not hold."""
        stage, result = self.outcome(payload, fmt)
        if type(result) is Event:
            check_event_meets_contract(result, payload)
            name = "valid"
        elif type(result) is Rejection:
            if not isinstance(result.message, str) or not 0 < len(result.message) <= MAX_MESSAGE:
                raise AssertionError(f"message missing or too long ({len(str(result.message))}): {result!r:.300}")
            if stage == "parse":
                if result.code not in PAYLOAD_CODES[fmt] or result.field is not None:
                    raise AssertionError(f"{fmt} parse gave {result.code}/{result.field}")
            elif result.code not in FIELD_CODES or result.field not in FIELDS:
                raise AssertionError(f"validate gave {result.code}/{result.field}")
            name = result.code
        else:
            raise AssertionError(f"neither an Event nor a Rejection: {type(result).__name__}")
        if (name == dl.PAYLOAD_TOO_LARGE) != (len(payload) > MAX_PAYLOAD):
            raise AssertionError(f"payload_too_large mismatch: {name} for {len(payload)} bytes")
        if fmt == "json" and len(payload) <= MAX_PAYLOAD and (name == dl.INVALID_ENCODING) != (not _is_utf8(payload)):
            raise AssertionError(f"invalid_encoding mismatch: {name}")
        if again and self.outcome(payload, fmt) != (stage, result):
            raise AssertionError("the same bytes gave another outcome")
        if fmt == "json" and self.fast is not None:
            self._check_fast_path(payload, result)
        return name

    def _check_fast_path(self, payload: bytes, result: Event | Rejection) -> None:
        accepted = self.fast.validate_batch([payload])[0]
        if not accepted:
            return  # left to the reference, as anything may be
        got = event_of(accepted[0], payload, SOURCE)
        if not (type(result) is Event and got == result and all(map(_same_type, got, result))):
            raise AssertionError(f"the C fast path accepted it as {got!r:.300}; the reference: {result!r:.300}")


def _same_type(a: Any, b: Any) -> bool:
    return type(a) is type(b)


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _nesting(payload: bytes) -> int:
    """Nesting depth of a payload that starts with brackets (how deep the heavy inputs go), else 0."""
    return len(payload) - len(payload.lstrip(b"[{")) if payload[:1] in (b"[", b"{") else 0


def _rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def run_fuzz(count: int, seed: int) -> FuzzReport:
    process = psutil.Process()
    report = FuzzReport(seed=seed, rss_start_mb=_rss_mb(process))
    harness = Harness()
    generator = InputGenerator(seed)
    started = time.perf_counter()
    for n, (kind, fmt, payload) in enumerate(generator.generate(count)):
        report.by_kind[kind] += 1
        report.by_format[fmt] += 1
        try:
            report.outcomes[harness.check(payload, fmt, again=n % 16 == 0)] += 1
        except Exception as exc:  # noqa: BLE001 - an exception is exactly what the fuzz looks for: record it
            report.failure_count += 1
            if len(report.failures) < 20:
                report.failures.append(f"#{n} {kind} {fmt} {payload[:120]!r} ({len(payload)} bytes): {exc!r:.500}")
        if kind == "heavy":
            report.largest_input_bytes = max(report.largest_input_bytes, len(payload))
            report.deepest_nesting = max(report.deepest_nesting, _nesting(payload))
        if n % RSS_EVERY == 0:
            rss = _rss_mb(process)
            report.rss_peak_mb = max(report.rss_peak_mb, rss)
            if n == WARM_UP:
                report.rss_after_warm_up_mb = rss
    report.inputs = count
    report.seconds = time.perf_counter() - started
    report.rss_end_mb = _rss_mb(process)
    report.rss_peak_mb = max(report.rss_peak_mb, report.rss_end_mb)
    if not report.rss_after_warm_up_mb:
        report.rss_after_warm_up_mb = report.rss_end_mb
    _trace_heavy(report, harness, seed)
    return report


def _trace_heavy(report: FuzzReport, harness: Harness, seed: int) -> None:
    """Allocation peak of single heavy inputs (tracemalloc is too slow to leave on for the whole run)."""
    generator = InputGenerator(seed + 1)
    worst_ratio = 0.0
    tracemalloc.start()
    try:
        for _ in range(HEAVY_SAMPLE):
            fmt, payload = generator._heavy()
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            harness.outcome(payload, fmt)
            peak = tracemalloc.get_traced_memory()[1] - base
            report.heavy_traced += 1
            if peak / 2**20 > report.heavy_peak_mb:
                report.heavy_peak_mb = peak / 2**20
                worst_ratio = peak / len(payload)
    finally:
        tracemalloc.stop()
    report.heavy_peak_ratio = worst_ratio


def write_corpus(directory: Path, count: int, seed: int) -> None:
    """Generated inputs as files for libFuzzer: one byte naming the format (as atheris_target reads it), then the
    payload. Inputs over 64 KiB are left out (libFuzzer mutates small inputs best)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = 0
    for n, (_kind, fmt, payload) in enumerate(InputGenerator(seed).generate(count)):
        if len(payload) <= 1 << 16:
            (directory / f"seed-{seed}-{n}").write_bytes(bytes([FORMATS.index(fmt)]) + payload)
            written += 1
    print(f"wrote {written} seed inputs to {directory}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fuzz parse + validate with seeded generated inputs.")
    parser.add_argument("--inputs", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument(
        "--write-corpus", metavar="DIR", help="write the inputs as a seed corpus for tests.fuzz.atheris_target instead"
    )
    args = parser.parse_args(argv)
    if args.write_corpus:
        write_corpus(Path(args.write_corpus), args.inputs, args.seed)
        return 0
    report = run_fuzz(args.inputs, args.seed)
    print(report.summary())
    print("  outcomes:", ", ".join(f"{k} {v:,}" for k, v in report.outcomes.most_common()))
    print("  kinds:   ", ", ".join(f"{k} {v:,}" for k, v in report.by_kind.most_common()))
    for failure in report.failures:
        print("  FAILED", failure)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    return 1 if report.failure_count else 0


if __name__ == "__main__":
    sys.exit(main())
