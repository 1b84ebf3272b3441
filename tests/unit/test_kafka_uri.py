"""Kafka configuration without a broker: ``kafka://`` URIs, consumer options, and what a record keeps for its dead
letter."""

from __future__ import annotations

from typing import NamedTuple

import pytest

from pipelines.options import ConfigError
from pipelines.spec import resolve
from pipelines.streaming_analytics import main
from transforms.io.kafka import KafkaTopic, check_start_offset, parse_kafka_uri, record_metadata


@pytest.mark.parametrize(
    ("uri", "servers", "topic"),
    [
        ("kafka://127.0.0.1:9092/events", ("127.0.0.1:9092",), "events"),
        (
            "kafka://broker-1:9092,broker-2.example.com:9093/events.v2",
            ("broker-1:9092", "broker-2.example.com:9093"),
            "events.v2",
        ),
        ("kafka://[::1]:9092/dlq_1", ("[::1]:9092",), "dlq_1"),
        ("kafka://b:1/" + "t" * 249, ("b:1",), "t" * 249),
        ("kafka://b:65535/...", ("b:65535",), "..."),
    ],
)
def test_kafka_uris(uri, servers, topic):
    parsed = parse_kafka_uri(uri)
    assert parsed == KafkaTopic(servers, topic)
    assert parsed.uri == uri and parsed.bootstrap_servers == ",".join(servers)


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("kafka://127.0.0.1:9092", "is not kafka://HOST:PORT"),
        ("kafka:///events", "is not kafka://HOST:PORT"),
        ("kafka://127.0.0.1/events", "is not HOST:PORT"),
        ("kafka://127.0.0.1:0/events", "port 1-65535"),
        ("kafka://127.0.0.1:65536/events", "port 1-65535"),
        ("kafka://a:1,,b:2/events", "is not HOST:PORT"),
        ("kafka://-bad-:9092/events", "is not HOST:PORT"),
        ("kafka://b:1/", "is not a Kafka topic name"),
        ("kafka://b:1/.", "is not a Kafka topic name"),
        ("kafka://b:1/..", "is not a Kafka topic name"),
        ("kafka://b:1/a/b", "is not a Kafka topic name"),
        ("kafka://b:1/with space", "is not a Kafka topic name"),
        ("kafka://b:1/" + "t" * 250, "is not a Kafka topic name"),
        ("pubsub://projects/p/topics/t", "not a kafka:// URI"),
    ],
)
def test_bad_kafka_uris(uri, words):
    with pytest.raises(ValueError) as raised:
        parse_kafka_uri(uri)
    assert words in str(raised.value)


def test_start_offsets():
    assert check_start_offset("earliest") == "earliest" and check_start_offset("latest") == "latest"
    for bad in ("EARLIEST", "none", "", "0"):
        with pytest.raises(ValueError, match="earliest, latest"):
            check_start_offset(bad)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--kafka_start_offset=beginning"], "--kafka_start_offset must be one of earliest, latest"),
        (["--kafka_consumer_group= "], "--kafka_consumer_group must be 1-255 characters"),
        (
            ["--source=kafka://b:1/t", "--timestamp_source=publish_time"],
            "--timestamp_source=publish_time needs a pubsub",
        ),
        (["--source=kafka://b:1/a,b"], "--source"),
        (["--dead_letter_sink=kafka://b/t"], "--dead_letter_sink"),
        (
            ["--source=synthetic://?events=5&mode=replay", "--dead_letter_sink=kafka://b:1/t", "--runner=DirectRunner"],
            "a replay (mode=replay, the default embedded demo) is a TestStream",
        ),
    ],
)
def test_bad_kafka_options_fail_at_start_up(argv, words):
    with pytest.raises(ConfigError) as raised:
        resolve(["--sink=/nonexistent/a", "--runner=PrismRunner", *argv])
    assert words in str(raised.value)


def test_kafka_options_are_one_line_errors_on_the_cli(capsys):
    argv = ["--runner=PrismRunner", "--source=kafka://b:1/t", "--kafka_start_offset=first", "--sink=/nonexistent/a"]
    assert main(argv) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: --kafka_start_offset must be one of earliest, latest, got 'first'"


class _Row(NamedTuple):  # the fields of a ReadFromKafka(with_metadata=True) row the dead letter keeps
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None


def test_record_metadata_keeps_position_time_and_key():
    row = _Row("events", 3, 1234, 1_700_000_000_123, "ключ".encode())
    assert record_metadata(row) == {
        "topic": "events",
        "partition": 3,
        "offset": 1234,
        "timestamp": 1_700_000_000_123,
        "key": "ключ",
    }
    assert record_metadata(row._replace(key=b"\xff\x00"))["key"] == "base64:/wA="  # not UTF-8
    assert record_metadata(row._replace(key=None))["key"] is None
