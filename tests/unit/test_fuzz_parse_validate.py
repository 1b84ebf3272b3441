"""One million seeded hostile inputs through parse + validate: no exception, exactly one outcome each, bounded memory.

The generator and the checks are in tests/fuzz (``python -m tests.fuzz.run`` prints the same report;
``make fuzz`` runs longer, then coverage-guided with atheris). Deterministic: a fixed seed gives the same inputs.
"""

from __future__ import annotations

from tests.fuzz.inputs import HEAVY_EVERY, MAX_PAYLOAD, WEIGHTS
from tests.fuzz.run import PAYLOAD_CODES, run_fuzz
from tests.unit.test_property_one_outcome import FIELD_CODES
from transforms import dead_letter as dl

INPUTS = 1_000_000
SEED = 20_240_101


def test_a_million_generated_inputs_have_one_outcome_each_in_bounded_memory() -> None:
    report = run_fuzz(INPUTS, SEED)
    print(report.summary())  # the figures docs/reliability.md quotes
    assert report.failure_count == 0, "\n".join(report.failures)
    assert report.inputs == INPUTS == sum(report.outcomes.values()) == sum(report.by_kind.values())

    # the stream really covers what it claims
    assert set(report.by_kind) == {*WEIGHTS, "heavy"}
    assert report.by_kind["heavy"] == INPUTS // HEAVY_EVERY
    assert set(report.by_format) == set(PAYLOAD_CODES)
    expected_codes = set().union(*PAYLOAD_CODES.values()) | FIELD_CODES | {"valid"}
    assert set(report.outcomes) == expected_codes, expected_codes ^ set(report.outcomes)
    assert report.outcomes[dl.INCOMPATIBLE_SCHEMA] > 1000 and report.outcomes["valid"] > 100_000
    assert report.largest_input_bytes > MAX_PAYLOAD
    assert report.deepest_nesting >= 200_000

    # bounded memory: nothing accumulates across inputs, and one record costs a bounded multiple of its size
    assert report.rss_end_mb - report.rss_after_warm_up_mb < 32
    assert report.rss_peak_mb - report.rss_start_mb < 128
    assert report.heavy_traced > 0 and report.heavy_peak_mb < 16 * MAX_PAYLOAD / 2**20
