"""Coverage-guided fuzzing of parse + validate with atheris (libFuzzer): the same checks as ``tests.fuzz.run``.

``make fuzz`` runs it for a while after the seeded run; by hand:

    .venv/bin/python -m tests.fuzz.atheris_target -max_total_time=300 -rss_limit_mb=2048 [corpus_dir]

The first input byte picks the format (JSON, Avro, Confluent Avro); the rest is the payload. Any exception or
broken invariant is a crash: libFuzzer writes the input to ``crash-<hash>`` for replay.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports(include=["transforms"]):
    from tests.fuzz.run import FORMATS, Harness

_HARNESS: Harness | None = None


def test_one_input(data: bytes) -> None:
    global _HARNESS
    if _HARNESS is None:
        _HARNESS = Harness()
    if not data:
        return
    _HARNESS.check(data[1:], FORMATS[data[0] % len(FORMATS)], again=False)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
