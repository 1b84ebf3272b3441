"""ParseEvents and ValidateEvents (on batches gathered by BatchRecords) in a Beam pipeline: outputs, and dead-letter
rows complete and replayable."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import apache_beam as beam
import fastavro
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

import schemas
from transforms import dead_letter as dl
from transforms.batching import BatchRecords
from transforms.io.files import read_avro_container
from transforms.metrics import NAMESPACE as METRICS_NAMESPACE
from transforms.parse_validate import ParseEvents, ValidateEvents, ValidBatch
from transforms.records import SourceRecord
from transforms.timefmt import format_rfc3339_us, parse_rfc3339_us

DEAD_LETTER_FIELDS = (
    "error_code",
    "error_field",
    "error_message",
    "payload",
    "source",
    "source_metadata",
    "stage",
    "failed_at",
)

VALID = b'{"event_id":"e-1","event_type":"click","user_id":"u-1","event_time":"2023-11-14T22:13:20Z","page":"/p"}'
VALID_US = 1_700_000_000_000_000


def check_dead_letters(expected: list[tuple[Any, ...]], stage: str, started_us: int):
    """A matcher: every row has exactly the 8 fields, the right stage, a replayable payload and an RFC 3339 time.

    ``expected`` holds (error_code, error_field, original payload, source, source_metadata) per row, any order.
    """

    def matcher(rows: list[dict[str, Any]]) -> None:
        assert len(rows) == len(expected), rows
        summaries = []
        for row in rows:
            assert tuple(row) == DEAD_LETTER_FIELDS  # exactly these, in the BigQuery schema's order
            assert row["stage"] == stage
            assert isinstance(row["error_message"], str) and row["error_message"]
            assert isinstance(row["payload"], str)
            original = base64.b64decode(row["payload"], validate=True)
            assert dl.original_payload(row) == original
            failed_at = parse_rfc3339_us(row["failed_at"])
            assert failed_at is not None, row["failed_at"]
            assert row["failed_at"].endswith("Z") and row["failed_at"] == format_rfc3339_us(failed_at)
            assert started_us - 1_000_000 <= failed_at <= time.time_ns() // 1000 + 1_000_000
            summaries.append((row["error_code"], row["error_field"], original, row["source"], row["source_metadata"]))
        key = repr
        assert sorted(summaries, key=key) == sorted(expected, key=key)

    return matcher


def events(checked: ValidBatch):
    """Each valid event of a batch: (event_id, event_time_us, key, payload, source, metadata, value, arrival_us)."""
    batch = checked.batch
    for v in checked.valid:
        record = batch.record(v[0])
        arrival = batch.arrivals[v[0]] if batch.arrivals else None
        yield (v[1], v[4], v[8], record.payload, record.source, record.metadata, v[6], arrival)


def padded(size: int) -> bytes:
    payload = VALID[:-1] + b',"pad":""}'
    return VALID[:-1] + b',"pad":"' + b"x" * (size - len(payload)) + b'"}'


def test_schema_file_lists_the_same_dead_letter_fields() -> None:
    assert schemas.bigquery_field_names("dead_letter") == DEAD_LETTER_FIELDS


def test_parse_and_validate_json_in_a_pipeline() -> None:
    started = time.time_ns() // 1000
    records = [
        SourceRecord(VALID, "topic-a", {"partition": 1, "offset": 10}),
        SourceRecord(b'{"event_id":"e-2"}\xff', "topic-a", {"partition": 1, "offset": 11}),
        SourceRecord(b'{"event_id":', "topic-b", {"offset": 12, "attributes": {"k": "v"}}),
        SourceRecord(b"[1,2]", "file:///in/a.jsonl", None),
        SourceRecord(padded(513), "topic-a", {"offset": 13}),
        SourceRecord(padded(512), "topic-a", {"offset": 14}),
        SourceRecord(b'{"event_id":5}', "topic-c", {"message_id": "m-1"}),
        SourceRecord(VALID.replace(b"2023-11-14T22:13:20Z", b"1999-12-31T23:59:59.999Z"), "topic-c", {"line": 3}),
        SourceRecord(VALID.replace(b'"/p"', b"7"), "topic-c", {"line": 4}),
    ]
    parse_dead = [
        (dl.INVALID_ENCODING, None, records[1].payload, "topic-a", {"partition": 1, "offset": 11}),
        (dl.MALFORMED_JSON, None, records[2].payload, "topic-b", {"offset": 12, "attributes": {"k": "v"}}),
        (dl.NOT_AN_OBJECT, None, b"[1,2]", "file:///in/a.jsonl", None),
        (dl.PAYLOAD_TOO_LARGE, None, records[4].payload, "topic-a", {"offset": 13}),
    ]
    validate_dead = [
        (dl.INVALID_TYPE, "event_id", b'{"event_id":5}', "topic-c", {"message_id": "m-1"}),
        (dl.TIMESTAMP_OUT_OF_RANGE, "event_time", records[7].payload, "topic-c", {"line": 3}),
        (dl.INVALID_TYPE, "page", records[8].payload, "topic-c", {"line": 4}),
    ]
    valid = [
        ("e-1", VALID_US, "/p", VALID, "topic-a", {"partition": 1, "offset": 10}),
        ("e-1", VALID_US, "/p", records[5].payload, "topic-a", {"offset": 14}),
    ]
    pipeline = BeamTestPipeline()
    parsed = pipeline | beam.Create(records) | BatchRecords() | ParseEvents("json", max_payload_bytes=512)
    validated = parsed.parsed | ValidateEvents("json", max_payload_bytes=512)
    assert_that(parsed.dead_letter, check_dead_letters(parse_dead, dl.STAGE_PARSE, started), label="ParseDead")
    assert_that(
        parsed.parsed
        | "ParsedSources"
        >> beam.FlatMap(
            lambda p: [p.batch.payloads[v[0]] for v in p.valid] + [p.batch.payloads[i] for i, _ in p.decoded]
        ),
        equal_to([r.payload for r in (records[0], records[5], records[6], records[7], records[8])]),
        label="Parsed",
    )
    assert_that(
        validated.dead_letter, check_dead_letters(validate_dead, dl.STAGE_VALIDATE, started), label="ValidateDead"
    )
    assert_that(
        validated.valid | "Summaries" >> beam.FlatMap(lambda c: [e[:6] for e in events(c)]).with_output_types(Any),
        equal_to(valid),
        label="Valid",
    )
    result = pipeline.run()
    result.wait_until_finish()
    counters = {
        c.key.metric.name: c.committed
        for c in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]
    }
    assert counters.get("records_read") == len(records)
    assert counters.get("events_valid") == len(valid)


def test_every_input_is_exactly_one_output() -> None:
    payloads = [VALID, b"", b"\xff", b"{}", b"null", VALID + b"x", VALID.replace(b"click", b"Click"), b"[" * 5000]
    records = [SourceRecord(p, "s", {"n": i}) for i, p in enumerate(payloads)]
    with BeamTestPipeline() as pipeline:
        parsed = pipeline | beam.Create(records) | BatchRecords() | ParseEvents()
        validated = parsed.parsed | ValidateEvents()
        outputs = (
            parsed.dead_letter | "P" >> beam.Map(lambda row: row["source_metadata"]["n"]),
            validated.dead_letter | "V" >> beam.Map(lambda row: row["source_metadata"]["n"]),
            validated.valid | "E" >> beam.FlatMap(lambda c: [e[5]["n"] for e in events(c)]),
        )
        assert_that(outputs | beam.Flatten(), equal_to(list(range(len(payloads)))))


def test_each_record_keeps_its_element_timestamp_as_arrival_time() -> None:
    records = [SourceRecord(VALID, "s", {"n": 0}), SourceRecord(VALID.replace(b"e-1", b"e-2"), "s", {"n": 1})]
    with BeamTestPipeline() as pipeline:
        valid = (
            pipeline
            | beam.Create(records)
            | beam.Map(lambda r: TimestampedValue(r, 1_700_000_005 + r.metadata["n"]))
            | BatchRecords()
            | ParseEvents()
        ).parsed | ValidateEvents()
        assert_that(
            valid.valid | beam.FlatMap(lambda c: [e[7] for e in events(c)]),
            equal_to([1_700_000_005_000_000, 1_700_000_006_000_000]),
        )


def avro_bytes(**changes: Any) -> bytes:
    out = io.BytesIO()
    record = {
        "event_id": "a-1",
        "event_type": "view",
        "user_id": "u",
        "event_time": 1_700_000_000_000,
        "page": None,
        "value": 2.5,
        "properties": None,
        **changes,
    }
    fastavro.schemaless_writer(out, schemas.event_avro_schema(), record)
    return out.getvalue()


def test_parse_and_validate_avro_in_a_pipeline() -> None:
    started = time.time_ns() // 1000
    good = avro_bytes()
    container = io.BytesIO()
    in_file = fastavro.schemaless_reader(io.BytesIO(avro_bytes(event_id="c-1")), schemas.event_avro_schema(), None)
    fastavro.writer(container, schemas.event_avro_schema(), [in_file])
    from_file = list(read_avro_container("gs://bucket/f.avro", container.getvalue()))
    corrupt = list(read_avro_container("gs://bucket/bad.avro", b"definitely not avro"))
    records = [
        SourceRecord(good, "sub-1", {"publish_time": "2023-11-14T22:13:20Z"}),
        SourceRecord(good[:-3], "sub-1", {"offset": 2}),
        SourceRecord(good + b"\x00", "sub-1", {"offset": 3}),
        SourceRecord(avro_bytes(user_id="@").replace(b"@", b"\xff"), "sub-1", {"offset": 4}),
        SourceRecord(avro_bytes(event_id=""), "sub-2", {"offset": 5}),
        *from_file,
        *corrupt,
    ]
    parse_dead = [
        (dl.MALFORMED_AVRO, None, good[:-3], "sub-1", {"offset": 2}),
        (dl.MALFORMED_AVRO, None, good + b"\x00", "sub-1", {"offset": 3}),
        (dl.INVALID_ENCODING, None, records[3].payload, "sub-1", {"offset": 4}),
        (dl.MALFORMED_AVRO, None, corrupt[0].payload, "gs://bucket/bad.avro", corrupt[0].metadata),
    ]
    validate_dead = [(dl.INVALID_VALUE, "event_id", records[4].payload, "sub-2", {"offset": 5})]
    with BeamTestPipeline() as pipeline:
        parsed = pipeline | beam.Create(records) | BatchRecords() | ParseEvents("avro")
        validated = parsed.parsed | ValidateEvents("avro")
        assert_that(parsed.dead_letter, check_dead_letters(parse_dead, dl.STAGE_PARSE, started), label="ParseDead")
        assert_that(
            validated.dead_letter, check_dead_letters(validate_dead, dl.STAGE_VALIDATE, started), label="ValidateDead"
        )
        assert_that(
            validated.valid
            | beam.FlatMap(lambda c: [(e[0], e[6], e[3], e[4], e[5]) for e in events(c)]).with_output_types(Any),
            equal_to(
                [
                    ("a-1", 2.5, good, "sub-1", {"publish_time": "2023-11-14T22:13:20Z"}),
                    ("c-1", 2.5, from_file[0].payload, "gs://bucket/f.avro", {"record": 0}),
                ]
            ),
            label="Valid",
        )
    assert corrupt[0].metadata["record"] == 0 and b"definitely not avro".endswith(corrupt[0].payload)


def test_parse_events_rejects_an_unknown_format_at_construction() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        ParseEvents("xml")


def test_records_of_several_sources_make_batches_of_one_source_each() -> None:
    records = [SourceRecord(VALID, "a"), SourceRecord(VALID, "b"), SourceRecord(VALID, "b")]
    with BeamTestPipeline() as pipeline:
        valid = (pipeline | beam.Create(records) | BatchRecords() | ParseEvents()).parsed | ValidateEvents()
        assert_that(valid.valid | beam.FlatMap(lambda c: [e[4] for e in events(c)]), equal_to(["a", "b", "b"]))


# ---------------------------------------------------------------------------------------------------------------
# The row builder itself.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "encoded"),
    [
        pytest.param(b"", "", id="empty"),
        pytest.param(b"\xff\x00\xfe", "/wD+", id="binary"),
        pytest.param("é".encode(), "w6k=", id="utf8"),
        pytest.param(None, None, id="none"),
    ],
)
def test_dead_letter_row(payload: bytes | None, encoded: str | None) -> None:
    rejection = dl.Rejection(dl.INVALID_TYPE, "page", "'page' must be a string or null, got number")
    row = dl.dead_letter(rejection, payload, "src", {"offset": 1}, dl.STAGE_VALIDATE, failed_at_us=VALID_US + 1500)
    assert row == {
        "error_code": "invalid_type",
        "error_field": "page",
        "error_message": "'page' must be a string or null, got number",
        "payload": encoded,
        "source": "src",
        "source_metadata": {"offset": 1},
        "stage": "validate",
        "failed_at": "2023-11-14T22:13:20.001500Z",
    }
    assert dl.original_payload(row) == payload


def test_dead_letter_row_defaults_failed_at_to_now() -> None:
    before = time.time_ns() // 1000
    row = dl.dead_letter(dl.Rejection(dl.MALFORMED_JSON, None, "m"), b"x", None, None, dl.STAGE_PARSE)
    after = time.time_ns() // 1000
    assert before - 1 <= parse_rfc3339_us(row["failed_at"]) <= after
    assert (row["source"], row["source_metadata"], row["error_field"]) == (None, None, None)


def test_error_codes_are_the_contract_codes_in_order() -> None:
    assert dl.ERROR_CODES[:10] == (
        "payload_too_large",
        "invalid_encoding",
        "malformed_json",
        "malformed_avro",
        "incompatible_schema",
        "not_an_object",
        "missing_field",
        "invalid_type",
        "invalid_value",
        "timestamp_out_of_range",
    )
    assert (dl.STAGE_PARSE, dl.STAGE_VALIDATE, dl.STAGE_WINDOW, dl.STAGE_WRITE) == (
        "parse",
        "validate",
        "window",
        "write",
    )
