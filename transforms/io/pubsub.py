"""Google Cloud Pub/Sub: records in from a subscription or topic, dead letters out to a topic.

``pubsub://projects/P/subscriptions/S`` reads an existing subscription; ``pubsub://projects/P/topics/T`` reads a
topic through a temporary subscription. The client honours ``PUBSUB_EMULATOR_HOST``, so the same code talks to the
local emulator in tests and to Google in production. Each record keeps ``message_id``, ``attributes`` and
``publish_time`` for its dead letter; its arrival time (the element timestamp) is the publish time.

Dataflow and the direct runner read with Beam's ``ReadFromPubSub`` (Dataflow's native read; the direct runner's
substitute); every other runner (Prism, Flink) with ``PullFromPubSub`` (transforms/io/pubsub_pull.py), which
acknowledges a message only once the runner has committed the bundle that read it. ``has_native_pubsub_read`` is
the one place that chooses.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import apache_beam as beam
import orjson
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub

from transforms.io.gcp import PROJECT_ID
from transforms.io.pubsub_pull import PullFromPubSub
from transforms.records import SourceRecord
from transforms.timefmt import format_rfc3339_us

SCHEME = "pubsub"

# Google's naming rules (cloud.google.com/pubsub/docs/create-topic#resource_names, project ids).
_PROJECT = PROJECT_ID
_NAME = r"[A-Za-z][-A-Za-z0-9._~%+]{2,254}"
_PATH = re.compile(rf"projects/(?P<project>{_PROJECT})/(?P<kind>topics|subscriptions)/(?P<name>{_NAME})")


class PubSubPath(NamedTuple):
    project: str
    kind: str  # "topics" or "subscriptions"
    name: str

    @property
    def path(self) -> str:
        return f"projects/{self.project}/{self.kind}/{self.name}"

    @property
    def is_topic(self) -> bool:
        return self.kind == "topics"


def parse_pubsub_uri(uri: str) -> PubSubPath:
    """``pubsub://projects/P/{topics|subscriptions}/N`` -> PubSubPath; ValueError naming what is wrong."""
    prefix = f"{SCHEME}://"
    if not uri.startswith(prefix):
        raise ValueError(f"not a {prefix} URI: {uri!r}")
    match = _PATH.fullmatch(uri[len(prefix) :])
    if match is None:
        raise ValueError(
            f"{uri!r} is not pubsub://projects/PROJECT/topics/TOPIC or pubsub://projects/PROJECT/subscriptions/SUB "
            "(names: 3-255 characters, start with a letter, letters, digits and - . _ ~ % +)"
        )
    if match["name"].lower().startswith("goog"):
        raise ValueError(f"Pub/Sub names must not start with 'goog': {match['name']!r}")
    return PubSubPath(match["project"], match["kind"], match["name"])


def message_metadata(message: PubsubMessage) -> dict[str, Any]:
    """What the dead letter keeps of a message: id, attributes and publish time (RFC 3339 UTC)."""
    publish_time = message.publish_time
    if publish_time is not None and not isinstance(publish_time, str):
        publish_time = format_rfc3339_us(int(publish_time.timestamp() * 1_000_000))
    return {
        "message_id": message.message_id,
        "attributes": dict(message.attributes or {}),
        "publish_time": publish_time,
    }


# Runners with a Pub/Sub read of their own: Dataflow implements beam:transform:pubsub_read:v1 natively (acking when
# its shuffle has persisted the messages) and the direct runner replaces it with a Python reader (acking on pull).
NATIVE_READ_RUNNERS = ("DataflowRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


def has_native_pubsub_read(runner: object) -> bool:
    """Whether ``runner`` (a Beam runner object; subclasses such as TestDataflowRunner included) executes Beam's own
    Pub/Sub read. Every other runner gets ``PullFromPubSub``."""
    return any(cls.__name__ in NATIVE_READ_RUNNERS for cls in type(runner).__mro__)


class ReadPubSubRecords(beam.PTransform):
    """Pub/Sub messages -> SourceRecords (payload = message data), timestamped by publish time."""

    def __init__(self, uri: str) -> None:
        super().__init__()
        self._ref = parse_pubsub_uri(uri)

    def expand(self, pbegin):
        ref = self._ref
        if has_native_pubsub_read(pbegin.pipeline.runner):
            read = (
                ReadFromPubSub(topic=ref.path, with_attributes=True)
                if ref.is_topic
                else ReadFromPubSub(subscription=ref.path, with_attributes=True)
            )
        else:
            read = PullFromPubSub(topic=ref.path) if ref.is_topic else PullFromPubSub(subscription=ref.path)
        source = ref.path
        return (
            pbegin
            | "Read" >> read
            | "ToRecord"
            >> beam.Map(lambda m: SourceRecord(m.data, source, message_metadata(m))).with_output_types(SourceRecord)
        )


class WritePubSubRows(beam.PTransform):
    """Rows -> one Pub/Sub message each (the row as JSON), with its error_code/stage as attributes."""

    def __init__(self, uri: str) -> None:
        super().__init__()
        self._ref = parse_pubsub_uri(uri)
        if not self._ref.is_topic:
            raise ValueError(f"a Pub/Sub sink must be a topic, not a subscription: {uri!r}")

    def expand(self, rows):
        def to_message(row: dict[str, Any]) -> PubsubMessage:
            attributes = {k: str(row[k]) for k in ("error_code", "stage", "event_type") if row.get(k) is not None}
            return PubsubMessage(orjson.dumps(row), attributes)

        return (
            rows
            | "ToMessage" >> beam.Map(to_message)
            | "Publish" >> WriteToPubSub(self._ref.path, with_attributes=True)
        )
