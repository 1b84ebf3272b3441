"""Poison records: a step that throws on one record dead-letters that record (stage, processing_error, exception
text, original bytes) and the other records go on; outputs are all-or-nothing per element.

The throwing steps here are test DoFns and functions built to fail on one chosen record; the whole-graph timelines
are in tests/streaming/test_poison_records.py.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.coders import VarIntCoder
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.userstate import ReadModifyWriteStateSpec

from transforms import dead_letter as dl
from transforms.guard import dead_letter_on_error, guarded_map, processing_error_dead_letters, records_in
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.records import Event, SourceRecord


def event(event_id: str, payload: bytes | None = None, metadata: dict[str, Any] | None = None) -> Event:
    return Event(
        event_id,
        "click",
        "u",
        1_700_000_000_000_000,
        None,
        0,
        None,
        None,
        payload if payload is not None else f'{{"event_id":"{event_id}"}}'.encode(),
        "topic-a",
        metadata if metadata is not None else {"offset": int(event_id[1:]) if event_id[1:].isdigit() else -1},
        0,
    )


EVENTS = [event(f"e{i}") for i in range(6)]
POISON = event("poison", payload=b'{"event_id":"poison","raw":"\xff bytes kept"}', metadata={"offset": 99})
POISON_B64 = base64.b64encode(POISON.payload).decode()


def dead_letter_summary(row: dict[str, Any]) -> tuple:
    return (row["error_code"], row["error_field"], row["stage"], dl.original_payload(row), row["source"])


class _ExplodesOnPoison(beam.DoFn):
    """Yields two outputs per event; for the poison one it yields the first, then throws."""

    @dead_letter_on_error(dl.STAGE_DEDUP, "ExplodesOnPoison")
    def process(self, element: Event, timestamp=beam.DoFn.TimestampParam) -> Iterator[str]:
        yield f"{element.event_id}:first"
        if element.event_id == "poison":
            raise ZeroDivisionError(f"cannot handle {element.event_id} at {object()}")
        yield f"{element.event_id}:second"


def test_a_throwing_dofn_dead_letters_the_record_and_emits_nothing_else_for_it() -> None:
    with BeamTestPipeline() as p:
        out = (
            p
            | beam.Create([*EVENTS[:3], POISON, *EVENTS[3:]])
            | beam.ParDo(_ExplodesOnPoison()).with_outputs(dl.DEAD_LETTER_TAG, main="main")
        )
        good = [f"{e.event_id}:{part}" for e in EVENTS for part in ("first", "second")]
        assert_that(out.main, equal_to(good), label="AllOthersAndNoPartialOutput")

        def check(rows: list[dict[str, Any]]) -> None:
            assert len(rows) == 1
            (row,) = rows
            assert dead_letter_summary(row) == (dl.PROCESSING_ERROR, None, "dedup", POISON.payload, "topic-a")
            assert row["source_metadata"] == {"offset": 99}
            assert row["error_message"].startswith("ExplodesOnPoison failed: ZeroDivisionError: cannot handle poison")
            assert " at 0x" not in row["error_message"]  # no memory address: the same record gives the same text
            assert set(row) == set(schemas_dead_letter_fields())

        assert_that(out[dl.DEAD_LETTER_TAG], check, label="OneDeadLetter")
    counters = {
        r.key.metric.name: r.committed
        for r in p.result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    }
    assert counters["processing_errors"] == 1


def schemas_dead_letter_fields() -> tuple[str, ...]:
    import schemas

    return schemas.bigquery_field_names("dead_letter")


class _StatefulExplodes(beam.DoFn):
    """A stateful DoFn (keyed state and a DoFn param) keeps working under the decorator."""

    SEEN = ReadModifyWriteStateSpec("seen", VarIntCoder())

    @dead_letter_on_error(dl.STAGE_DEDUP)
    def process(self, element: tuple[str, Event], seen=beam.DoFn.StateParam(SEEN)) -> Iterator[str]:
        count = (seen.read() or 0) + 1
        seen.write(count)
        if element[1].event_id == "poison":
            raise KeyError("no such thing")
        yield f"{element[1].event_id}:{count}"


def test_decorated_stateful_dofn_keeps_state_and_dead_letters_the_poison_record() -> None:
    with BeamTestPipeline() as p:
        out = (
            p
            | beam.Create([("k", EVENTS[0]), ("k", POISON), ("j", EVENTS[1])])
            | beam.ParDo(_StatefulExplodes()).with_outputs(dl.DEAD_LETTER_TAG, main="main")
        )
        assert_that(out.main | beam.Map(lambda s: s.split(":")[0]), equal_to(["e0", "e1"]), label="Main")
        assert_that(
            out[dl.DEAD_LETTER_TAG] | beam.Map(dead_letter_summary),
            equal_to([(dl.PROCESSING_ERROR, None, "dedup", POISON.payload, "topic-a")]),
            label="Dead",
        )
        assert_that(
            out[dl.DEAD_LETTER_TAG] | "Message" >> beam.Map(lambda r: r["error_message"]),
            equal_to(["_StatefulExplodes failed: KeyError: 'no such thing'"]),
            label="Message",
        )


def _stamp_or_explode(item: Event) -> str:
    if item.event_id == "poison":
        raise ValueError("bad poison")
    return item.event_id.upper()


def test_guarded_map_dead_letters_what_the_function_cannot_take() -> None:
    with BeamTestPipeline() as p:
        out = (
            p
            | beam.Create([EVENTS[0], POISON, EVENTS[1]])
            | "Stamp" >> guarded_map(_stamp_or_explode, dl.STAGE_EVENT_TIME, str, main="stamped", label="Apply")
        )
        assert_that(out.stamped, equal_to(["E0", "E1"]), label="Main")
        assert_that(
            out[dl.DEAD_LETTER_TAG] | beam.Map(lambda r: (r["stage"], r["error_message"], r["payload"])),
            equal_to(
                [
                    (
                        "event_time",
                        "_stamp_or_explode failed: ValueError: bad poison",
                        base64.b64encode(POISON.payload).decode(),
                    )
                ]
            ),
            label="Dead",
        )


def test_a_group_of_records_gives_one_dead_letter_per_record() -> None:
    group = ("id-1", [EVENTS[0], POISON, EVENTS[1]])
    rows = processing_error_dead_letters(group, dl.STAGE_DEDUP, "KeepFirst", RuntimeError("boom"))
    assert [dl.original_payload(r) for r in rows] == [EVENTS[0].payload, POISON.payload, EVENTS[1].payload]
    assert {r["stage"] for r in rows} == {"dedup"} and {r["error_code"] for r in rows} == {"processing_error"}


@pytest.mark.parametrize(
    ("element", "found"),
    [
        pytest.param(POISON, [POISON], id="event"),
        pytest.param(SourceRecord(b"x", "s"), [SourceRecord(b"x", "s")], id="source-record"),
        pytest.param(({"obj": 1}, SourceRecord(b"y", "s")), [SourceRecord(b"y", "s")], id="parsed-pair"),
        pytest.param((("click", "/p"), POISON), [POISON], id="keyed"),
        pytest.param(beam.window.TimestampedValue(POISON, 5), [POISON], id="timestamped"),
        pytest.param(("k", iter([POISON, EVENTS[0]])), [POISON, EVENTS[0]], id="grouped"),
        pytest.param({"window_start": "x"}, [], id="a-row"),
        pytest.param(b"bytes", [], id="bytes"),
        pytest.param(7, [], id="int"),
    ],
)
def test_records_in(element: Any, found: list) -> None:
    assert records_in(element) == found


def test_an_element_without_a_record_is_described_not_lost() -> None:
    class Odd:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    for element, described in [
        (("click", "/p", 3), "('click', '/p', 3)"),
        (Odd(), "<Odd: repr failed with RuntimeError>"),
    ]:
        (row,) = processing_error_dead_letters(element, dl.STAGE_WINDOW, "ToRow", TypeError("x" * 5000))
        assert row["payload"] is None and row["source"] is None
        assert row["source_metadata"] == {"element": described}
        assert len(row["error_message"]) == dl.MAX_MESSAGE_CHARS


def test_stages_and_codes_are_listed() -> None:
    assert dl.PROCESSING_ERROR in dl.ERROR_CODES
    assert dl.STAGES == ("parse", "validate", "event_time", "dedup", "window", "write")
