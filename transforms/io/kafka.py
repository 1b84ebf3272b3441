"""Apache Kafka: records in from a topic, dead letters out to a topic (Beam's cross-language KafkaIO).

``kafka://HOST:PORT[,HOST:PORT...]/TOPIC`` names the bootstrap servers and one topic. Reading uses
``ReadFromKafka(with_metadata=True)`` with the record's create/log-append time as element timestamp (the arrival
time the too-late filter judges by); each record keeps ``topic``, ``partition``, ``offset``, ``timestamp``
(epoch ms) and ``key`` for its dead letter. Writing sends each row as JSON bytes, keyed by its ``error_code``.

Both transforms are Java (KafkaIO) expanded by an expansion service: pass one (``pipelines/local_run/jars.py`` builds it
from the cached jars); with None, Beam would download its default jar, which this project never relies on.
"""

from __future__ import annotations

import base64
import re
from typing import Any, NamedTuple

import apache_beam as beam
import orjson
from apache_beam.io.kafka import ReadFromKafka, ReadFromKafkaSchema, WriteToKafka
from apache_beam.transforms.external import ExternalTransform, NamedTupleBasedPayloadBuilder

from transforms.records import SourceRecord

SCHEME = "kafka"
START_OFFSETS = ("earliest", "latest")
DEFAULT_CONSUMER_GROUP = "realtime-analytics"
DEFAULT_START_OFFSET = "latest"

_TOPIC = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"  # DNS name, IPv4, or [IPv6]
_SERVER = re.compile(rf"(?P<host>{_HOST}):(?P<port>[0-9]{{1,5}})")


# The read configuration ``ReadFromKafka`` would send, cut to the fields every Java KafkaIO since 2.5x knows: Beam 2.77
# adds fields (redistribute, allow_duplicates, ...) that an older expansion service refuses ("missing a setter"), and
# the Flink runner here is Beam Java 2.56 (pipelines/local_run/jars.py). Newer Java sides take absent fields as their
# defaults.
_READ_CONFIG_FIELDS = (
    "consumer_config",
    "topics",
    "key_deserializer",
    "value_deserializer",
    "start_read_time",
    "max_num_records",
    "max_read_time",
    "commit_offset_in_finalize",
    "timestamp_policy",
    "consumer_polling_timeout",
)
_READ_CONFIG = NamedTuple(  # noqa: UP014 - the fields are taken from Beam's own schema
    "ReadFromKafkaSchema", [(name, ReadFromKafkaSchema.__annotations__[name]) for name in _READ_CONFIG_FIELDS]
)


class KafkaTopic(NamedTuple):
    servers: tuple[str, ...]  # "host:port" each
    topic: str

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(self.servers)

    @property
    def uri(self) -> str:
        return f"{SCHEME}://{self.bootstrap_servers}/{self.topic}"


class KafkaSettings(NamedTuple):
    """How to read (consumer group, where a new group starts), who expands the Java transforms, and the client
    properties both consumer and producer get on top (TLS/SASL: ``transforms/io/kafka_security.py``)."""

    consumer_group: str = DEFAULT_CONSUMER_GROUP
    start_offset: str = DEFAULT_START_OFFSET
    expansion_service: Any = None
    client_properties: tuple[tuple[str, str], ...] = ()


def parse_kafka_uri(uri: str) -> KafkaTopic:
    """``kafka://HOST:PORT[,HOST:PORT]/TOPIC`` -> KafkaTopic; ValueError naming what is wrong."""
    prefix = f"{SCHEME}://"
    if not uri.startswith(prefix):
        raise ValueError(f"not a {prefix} URI: {uri!r}")
    servers_part, slash, topic = uri[len(prefix) :].partition("/")
    if not slash or not servers_part:
        raise ValueError(f"{uri!r} is not kafka://HOST:PORT[,HOST:PORT...]/TOPIC")
    servers = []
    for server in servers_part.split(","):
        match = _SERVER.fullmatch(server)
        if match is None or not 1 <= int(match["port"]) <= 65535:
            raise ValueError(f"{uri!r}: {server!r} is not HOST:PORT (port 1-65535)")
        servers.append(server)
    if not _TOPIC.fullmatch(topic) or topic in (".", ".."):
        raise ValueError(
            f"{uri!r}: topic {topic!r} is not a Kafka topic name (1-249 characters of letters, digits, '.', '_', "
            "'-'; not '.' or '..')"
        )
    return KafkaTopic(tuple(servers), topic)


_CONSUMER_GROUP = re.compile(r"[a-zA-Z0-9._-]{1,255}")


def check_consumer_group(value: str | None) -> str:
    """A consumer group id: 1-255 letters, digits, '.', '_', '-' (stricter than Kafka, which takes any string, so
    that group names are safe in ACLs, metrics, logs and shell commands)."""
    if not value or not _CONSUMER_GROUP.fullmatch(value):
        raise ValueError(f"must be 1-255 characters of letters, digits, '.', '_' and '-', got {value!r}")
    return value


def check_start_offset(value: str) -> str:
    if value not in START_OFFSETS:
        raise ValueError(f"must be one of {', '.join(START_OFFSETS)}, got {value!r}")
    return value


def _key_text(key: bytes | None) -> str | None:
    """The record key for the dead letter: the text if it is UTF-8, otherwise ``base64:<base64>``."""
    if key is None:
        return None
    try:
        return bytes(key).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(key)).decode("ascii")


def record_metadata(row: Any) -> dict[str, Any]:
    """What the dead letter keeps of a Kafka record (a ReadFromKafka ``with_metadata`` row)."""
    return {
        "topic": row.topic,
        "partition": int(row.partition),
        "offset": int(row.offset),
        "timestamp": int(row.timestamp),  # epoch milliseconds (create or log-append time)
        "key": _key_text(row.key),
    }


class _ToRecord(beam.DoFn):
    def __init__(self, source: str) -> None:
        self._source = source

    def process(self, row: Any):
        yield SourceRecord(bytes(row.value) if row.value is not None else b"", self._source, record_metadata(row))


class ReadKafkaRecords(beam.PTransform):
    """Kafka records -> SourceRecords (payload = value bytes), timestamped by the record's Kafka timestamp."""

    def __init__(self, uri: str, settings: KafkaSettings | None = None) -> None:
        super().__init__()
        self._ref = parse_kafka_uri(uri)
        self._settings = settings or KafkaSettings()
        check_start_offset(self._settings.start_offset)

    def expand(self, pbegin):
        ref, settings = self._ref, self._settings
        config = {
            "consumer_config": {
                **dict(settings.client_properties),
                "bootstrap.servers": ref.bootstrap_servers,
                "group.id": settings.consumer_group,
                "auto.offset.reset": settings.start_offset,
            },
            "topics": [ref.topic],
            "key_deserializer": ReadFromKafka.byte_array_deserializer,
            "value_deserializer": ReadFromKafka.byte_array_deserializer,
            "start_read_time": None,
            "max_num_records": None,
            "max_read_time": None,
            # Offsets go back to the consumer group once the runner has checkpointed the records read (bundle
            # finalization; on Flink: a completed checkpoint): a restarted job with the same group continues where
            # this one stopped.
            "commit_offset_in_finalize": True,
            # The record's own timestamp (producer create time, or the broker's log-append time when the topic is
            # configured so): the arrival time the too-late filter judges by, the same on every runner.
            "timestamp_policy": ReadFromKafka.create_time_policy,
            "consumer_polling_timeout": 2,
        }
        read = ExternalTransform(
            ReadFromKafka.URN_WITH_METADATA,
            NamedTupleBasedPayloadBuilder(_READ_CONFIG(**config)),
            settings.expansion_service,
        )
        return pbegin | "Read" >> read | "ToRecord" >> beam.ParDo(_ToRecord(ref.uri)).with_output_types(SourceRecord)


class WriteKafkaRows(beam.PTransform):
    """Rows -> one Kafka record each: value = the row as JSON, key = its error_code (none if it has none)."""

    def __init__(self, uri: str, settings: KafkaSettings | None = None) -> None:
        super().__init__()
        self._ref = parse_kafka_uri(uri)
        self._settings = settings or KafkaSettings()

    def expand(self, rows):
        def to_kv(row: dict[str, Any]) -> tuple[bytes, bytes]:
            code = row.get("error_code")
            return (code.encode() if code else b"", orjson.dumps(row))

        return (
            rows
            | "ToKV" >> beam.Map(to_kv).with_output_types(tuple[bytes, bytes])
            | "Produce"
            >> WriteToKafka(
                producer_config={
                    **dict(self._settings.client_properties),
                    "bootstrap.servers": self._ref.bootstrap_servers,
                },
                topic=self._ref.topic,
                expansion_service=self._settings.expansion_service,
            )
        )
