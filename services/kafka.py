"""Apache Kafka 4.x as a single-node KRaft broker (combined broker + controller) from Maven jars."""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from typing import ClassVar

from services import cache
from services._process import LOCALHOST, port_open, run_step
from services._service import LocalService

_SERVER_PROPERTIES = """\
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={host}:{controller}
listeners=PLAINTEXT://{host}:{broker},CONTROLLER://{host}:{controller}
advertised.listeners=PLAINTEXT://{host}:{broker}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={data}
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Tests create a consumer group and expect messages at once, not after the default 3 s delay.
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
"""


def _cluster_id() -> str:
    # Same format as `kafka-storage random-uuid` (base64url, no padding) without paying a JVM
    # start for it; Kafka avoids ids starting with "-" because its CLIs would read them as flags.
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


class KafkaBroker(LocalService):
    """Kafka broker on 127.0.0.1; clients use `bootstrap_servers`."""

    name: ClassVar[str] = "kafka"
    port_names: ClassVar[tuple[str, ...]] = ("broker", "controller")
    fixed_ports: ClassVar[dict[str, int]] = {"broker": 19092, "controller": 19093}
    startup_timeout: ClassVar[float] = 120.0
    heap: ClassVar[str] = "512m"

    def install(self) -> None:
        cache.ensure_kafka_jars()

    @property
    def bootstrap_servers(self) -> str:
        return f"{LOCALHOST}:{self._ports['broker']}"

    def _java(self, *args: str, heap: str) -> list[str]:
        return [
            cache.java_executable(),
            f"-Xmx{heap}",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={cache.KAFKA_LOG4J}",
            "-cp",
            # The JVM expands "dir/*" to every jar in dir itself; no shell involved.
            f"{cache.KAFKA_LIB}/*",
            *args,
        ]

    def server_properties(self) -> str:
        """The broker's server.properties (ports and work dir are known by now)."""
        return _SERVER_PROPERTIES.format(
            host=LOCALHOST,
            broker=self._ports["broker"],
            controller=self._ports["controller"],
            data=self.work_dir / "data",
        )

    def format_args(self) -> list[str]:
        """Extra arguments for `kafka-storage format` (e.g. SCRAM credentials)."""
        return []

    def prepare(self) -> None:
        properties = self.work_dir / "server.properties"
        properties.write_text(self.server_properties())
        format_cmd = self._java(
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(properties),
            "--standalone",
            *self.format_args(),
            heap="256m",
        )
        run_step(self.name, format_cmd, log_path=self.log_path, cwd=self.work_dir, timeout=120)

    def command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.work_dir / "server.properties"), heap=self.heap)

    def probe(self) -> None:
        # A closed port needs no client: librdkafka would only log connection-refused noise.
        if not port_open(self._ports["broker"]):
            raise ConnectionError(f"nothing listens on {self.bootstrap_servers} yet")
        # Imported here so `services down/status` work without the client libraries.
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap_servers, "socket.timeout.ms": 5000})
        metadata = admin.list_topics(timeout=5)
        if not metadata.brokers:
            raise RuntimeError("metadata lists no broker yet")

    def addresses(self) -> dict[str, str]:
        return {
            "bootstrap": self.bootstrap_servers,
            "controller": f"{LOCALHOST}:{self._ports.get('controller')}",
        }

    def env_vars(self) -> dict[str, str]:
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers}


SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")

_SECURE_LISTENERS = """\
listeners=PLAINTEXT://{host}:{broker},CONTROLLER://{host}:{controller},SSL://{host}:{ssl},SASL_SSL://{host}:{sasl_ssl}
advertised.listeners=PLAINTEXT://{host}:{broker},SSL://{host}:{ssl},SASL_SSL://{host}:{sasl_ssl}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL
# TLS: PEM files (server key + certificate chain; the CA that signed the clients' certificates).
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={truststore}
# SSL listener: mutual TLS (the client must show a certificate signed by the CA). SASL_SSL: TLS + SCRAM.
listener.name.ssl.ssl.client.auth=required
listener.name.sasl_ssl.ssl.client.auth=none
sasl.enabled.mechanisms={mechanism}
listener.name.sasl_ssl.{mechanism_lower}.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule \
required;
"""


class SecureKafkaBroker(KafkaBroker):
    """A Kafka broker with two more listeners: SSL (mutual TLS) and SASL_SSL (TLS + SCRAM).

    The PLAINTEXT listener stays (inter-broker traffic, admin probes). ``keystore`` is a PEM file with the server's
    private key (unencrypted PKCS#8) and certificate chain; ``truststore`` the PEM CA certificate(s) client
    certificates must chain to. SCRAM users are created when the storage is formatted (``--add-scram``), so
    ``scram_users`` (name -> password) can log in from the first connection. Not part of ``services up``: tests
    generate their own certificates and users.
    """

    name: ClassVar[str] = "kafka-secure"
    port_names: ClassVar[tuple[str, ...]] = ("broker", "controller", "ssl", "sasl_ssl")
    fixed_ports: ClassVar[dict[str, int]] = {"broker": 19192, "controller": 19193, "ssl": 19194, "sasl_ssl": 19195}

    def __init__(
        self,
        *,
        keystore: Path,
        truststore: Path,
        scram_users: dict[str, str],
        mechanism: str = "SCRAM-SHA-512",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if mechanism not in SCRAM_MECHANISMS:
            raise ValueError(f"mechanism must be one of {SCRAM_MECHANISMS}, got {mechanism!r}")
        self.keystore = Path(keystore)
        self.truststore = Path(truststore)
        self.scram_users = dict(scram_users)
        self.mechanism = mechanism

    @property
    def ssl_bootstrap_servers(self) -> str:
        return f"{LOCALHOST}:{self._ports['ssl']}"

    @property
    def sasl_ssl_bootstrap_servers(self) -> str:
        return f"{LOCALHOST}:{self._ports['sasl_ssl']}"

    def server_properties(self) -> str:
        plain = [
            line
            for line in super().server_properties().splitlines()
            if not line.startswith(("listeners=", "advertised.listeners=", "listener.security.protocol.map="))
        ]
        secure = _SECURE_LISTENERS.format(
            host=LOCALHOST,
            **self._ports,
            keystore=self.keystore,
            truststore=self.truststore,
            mechanism=self.mechanism,
            mechanism_lower=self.mechanism.lower(),
        )
        return "\n".join(plain) + "\n" + secure

    def format_args(self) -> list[str]:
        args = []
        for user, password in self.scram_users.items():
            args += ["--add-scram", f"{self.mechanism}=[name={user},password={password}]"]
        return args

    def addresses(self) -> dict[str, str]:
        return {
            **super().addresses(),
            "ssl": f"{LOCALHOST}:{self._ports.get('ssl')}",
            "sasl_ssl": f"{LOCALHOST}:{self._ports.get('sasl_ssl')}",
        }


def create_topics(bootstrap: str, *prefixes: str, partitions: int = 1) -> dict[str, str]:
    """Fresh topics named ``<prefix>-<random>``; returns prefix -> topic name."""
    # Imported here so `services down/status` work without the client libraries.
    from confluent_kafka.admin import AdminClient, NewTopic

    suffix = uuid.uuid4().hex[:8]
    names = {prefix: f"{prefix}-{suffix}" for prefix in prefixes}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in names.values()]
    for future in admin.create_topics(new).values():
        future.result(timeout=30)
    return names
