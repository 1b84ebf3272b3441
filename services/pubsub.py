"""Google's pstest Pub/Sub fake (Go, in-memory gRPC server) built from services/pstest."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, ClassVar

from services import cache
from services._process import LOCALHOST, port_open
from services._service import LocalService

if TYPE_CHECKING:
    from google.cloud import pubsub_v1


class PubSubEmulator(LocalService):
    """Pub/Sub emulator on 127.0.0.1; clients use PUBSUB_EMULATOR_HOST=`host`."""

    name: ClassVar[str] = "pubsub"
    port_names: ClassVar[tuple[str, ...]] = ("grpc",)
    fixed_ports: ClassVar[dict[str, int]] = {"grpc": 18085}
    startup_timeout: ClassVar[float] = 30.0
    stop_grace: ClassVar[float] = 5.0
    # Any project id works with the fake; this one is only used by the health probe.
    probe_project: ClassVar[str] = "services-health"

    def install(self) -> None:
        cache.ensure_pstest_binary()

    @property
    def host(self) -> str:
        return f"{LOCALHOST}:{self._ports['grpc']}"

    def command(self) -> list[str]:
        return [str(cache.PSTEST_BIN), "-port", str(self._ports["grpc"])]

    def publisher(self) -> pubsub_v1.PublisherClient:
        """A publisher bound to this emulator without touching os.environ (plain-text gRPC)."""
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

        transport = PublisherGrpcTransport(channel=grpc.insecure_channel(self.host))
        return pubsub_v1.PublisherClient(transport=transport)

    def subscriber(self) -> pubsub_v1.SubscriberClient:
        """A subscriber bound to this emulator without touching os.environ (plain-text gRPC)."""
        import grpc
        from google.cloud import pubsub_v1
        from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

        transport = SubscriberGrpcTransport(channel=grpc.insecure_channel(self.host))
        return pubsub_v1.SubscriberClient(transport=transport)

    def probe(self) -> None:
        if not port_open(self._ports["grpc"]):
            raise ConnectionError(f"nothing listens on {self.host} yet")
        publisher = self.publisher()
        try:
            topic = publisher.topic_path(self.probe_project, f"health-{uuid.uuid4().hex[:12]}")
            publisher.create_topic(name=topic, timeout=5)
            publisher.delete_topic(topic=topic, timeout=5)
        finally:
            publisher.transport.close()

    def addresses(self) -> dict[str, str]:
        return {"grpc": self.host}

    def env_vars(self) -> dict[str, str]:
        return {"PUBSUB_EMULATOR_HOST": self.host}
