"""Kafka over TLS and SASL: the client properties KafkaIO's consumer and producer get, without any secret in them.

The Kafka clients are Java (Beam's cross-language KafkaIO), configured through the property maps that end up in the
pipeline graph (and so in the Dataflow UI and in logs). Secrets therefore enter those maps only as *references* the
Kafka client resolves itself, inside the Java worker, through Kafka's config providers (KIP-297/KIP-421; kafka-clients
3.5+ ships ``EnvVarConfigProvider``):

    config.providers=env
    config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider
    sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="alice" \
        password="${env:KAFKA_PASSWORD}";

so the map holds ``${env:KAFKA_PASSWORD}``, and the worker process must have that variable. Certificates are not
secrets: a CA (and a client certificate chain for mutual TLS) is read at start-up and passed as PEM text
(``ssl.truststore.certificates``, ``ssl.keystore.certificate.chain``); the client's private key is a secret and
goes by reference (``ssl.keystore.key=${env:...}``). Host names are always verified
(``ssl.endpoint.identification.algorithm`` keeps its default, ``https``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from transforms.secrets import ENV, SecretError, SecretRef, parse_secret_ref, resolve_secret

PLAINTEXT = "PLAINTEXT"
SSL = "SSL"
SASL_PLAINTEXT = "SASL_PLAINTEXT"
SASL_SSL = "SASL_SSL"
PROTOCOLS = (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)

SCRAM_SHA_256 = "SCRAM-SHA-256"
SCRAM_SHA_512 = "SCRAM-SHA-512"
PLAIN = "PLAIN"
MECHANISMS = (SCRAM_SHA_512, SCRAM_SHA_256, PLAIN)
DEFAULT_MECHANISM = SCRAM_SHA_512

_LOGIN_MODULES = {
    SCRAM_SHA_256: "org.apache.kafka.common.security.scram.ScramLoginModule",
    SCRAM_SHA_512: "org.apache.kafka.common.security.scram.ScramLoginModule",
    PLAIN: "org.apache.kafka.common.security.plain.PlainLoginModule",
}
ENV_PROVIDER_CLASS = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"
_PROVIDER = "env"

# Printable, no quote or backslash (the JAAS line quotes it), no whitespace; SCRAM escapes ',' and '=' itself.
_USERNAME = re.compile(r"[!#-\[\]-~]{1,255}")
_PEM_CERT = re.compile(r"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+-----END CERTIFICATE-----")
_MAX_PEM_BYTES = 1 << 20


class KafkaSecurityError(ValueError):
    """A bad security setting; ``option`` is the setting's (option) name."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"--{option}: {message}")
        self.option = option


@dataclass(frozen=True)
class KafkaSecurity:
    """How the pipeline's Kafka clients connect; ``client_config()`` is merged into consumer and producer configs."""

    protocol: str = PLAINTEXT
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretRef | None = None
    ca_pem: str | None = None  # CA certificate(s) to trust; None = the JVM's default trust store
    client_cert_pem: str | None = None  # mutual TLS: the client's certificate chain
    client_key: SecretRef | None = None  # mutual TLS: the client's PKCS#8 PEM private key
    secrets: tuple[SecretRef, ...] = field(default=(), compare=False)

    @property
    def uses_tls(self) -> bool:
        return self.protocol in (SSL, SASL_SSL)

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in (SASL_PLAINTEXT, SASL_SSL)

    def client_config(self) -> dict[str, str]:
        """Kafka client properties (no secret values: only ``${env:NAME}`` references)."""
        if self.protocol == PLAINTEXT:
            return {}
        config = {"security.protocol": self.protocol}
        if self.uses_tls and self.ca_pem:
            config["ssl.truststore.type"] = "PEM"
            config["ssl.truststore.certificates"] = self.ca_pem
        if self.uses_tls and self.client_cert_pem and self.client_key:
            config["ssl.keystore.type"] = "PEM"
            config["ssl.keystore.certificate.chain"] = self.client_cert_pem
            config["ssl.keystore.key"] = _placeholder(self.client_key)
        if self.uses_sasl:
            module = _LOGIN_MODULES[self.sasl_mechanism]
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.jaas.config"] = (
                f'{module} required username="{self.sasl_username}" password="{_placeholder(self.sasl_password)}";'
            )
        if self.secrets:
            config["config.providers"] = _PROVIDER
            config[f"config.providers.{_PROVIDER}.class"] = ENV_PROVIDER_CLASS
        return config

    def check_secrets_resolve(self) -> None:
        """Start-up check: every referenced secret is readable here (the launcher); KafkaSecurityError otherwise."""
        for option, ref in (("kafka_sasl_password", self.sasl_password), ("kafka_ssl_client_key", self.client_key)):
            if ref is None:
                continue
            try:
                resolve_secret(ref)
            except SecretError as exc:
                raise KafkaSecurityError(option, str(exc)) from None


def _placeholder(ref: SecretRef) -> str:
    return "${" + f"{_PROVIDER}:{ref.name}" + "}"


def _secret(option: str, value: str | None) -> SecretRef | None:
    if value is None or value == "":
        return None
    try:
        ref = parse_secret_ref(value)
    except SecretError as exc:
        raise KafkaSecurityError(option, str(exc)) from None
    if ref.kind != ENV:
        raise KafkaSecurityError(
            option,
            "Secret Manager references are not supported for Kafka secrets: the Kafka client runs in Java and "
            "resolves env:NAME references only (Kafka's EnvVarConfigProvider); see docs/security.md",
        )
    return ref


def _read_small(path: str) -> bytes:
    """A small file, local or on a Beam filesystem (gs://...), so the flex template launcher can read it too."""
    if "://" in path and not path.startswith("file://"):
        from apache_beam.io.filesystems import CompressionTypes, FileSystems

        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
            return handle.read(_MAX_PEM_BYTES + 1)
    with open(path.removeprefix("file://"), "rb") as handle:
        return handle.read(_MAX_PEM_BYTES + 1)


def _pem_file(option: str, path: str | None, what: str) -> str | None:
    if not path:
        return None
    try:
        data = _read_small(path)
    except Exception as exc:  # noqa: BLE001 - OSError locally, Beam's/GCS's own errors remotely
        raise KafkaSecurityError(option, f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if len(data) > _MAX_PEM_BYTES:
        raise KafkaSecurityError(option, f"{path} is larger than {_MAX_PEM_BYTES} bytes; expected {what}")
    text = data.decode("ascii", "replace")
    if "PRIVATE KEY" in text:
        raise KafkaSecurityError(
            option,
            f"{path} holds a private key; the option takes {what} only (a client key goes by reference: "
            "--kafka_ssl_client_key=env:NAME)",
        )
    certificates = [m.group(0) for m in _PEM_CERT.finditer(text)]
    if not certificates:
        raise KafkaSecurityError(
            option, f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----); expected {what}"
        )
    return "\n".join(certificates) + "\n"


def kafka_security(
    protocol: str | None = PLAINTEXT,
    sasl_mechanism: str | None = None,
    sasl_username: str | None = None,
    sasl_password: str | None = None,
    ssl_ca_cert: str | None = None,
    ssl_client_cert: str | None = None,
    ssl_client_key: str | None = None,
) -> KafkaSecurity:
    """Validated settings (option values in, KafkaSecurityError naming the option out). Files are read here."""
    protocol = (protocol or PLAINTEXT).strip().upper()
    if protocol not in PROTOCOLS:
        raise KafkaSecurityError("kafka_security_protocol", f"must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    tls = protocol in (SSL, SASL_SSL)
    sasl = protocol in (SASL_PLAINTEXT, SASL_SSL)
    password = _secret("kafka_sasl_password", sasl_password)
    client_key = _secret("kafka_ssl_client_key", ssl_client_key)
    mechanism = (sasl_mechanism or "").strip().upper() or None
    if sasl:
        mechanism = mechanism or DEFAULT_MECHANISM
        if mechanism not in MECHANISMS:
            raise KafkaSecurityError(
                "kafka_sasl_mechanism", f"must be one of {', '.join(MECHANISMS)}, got {mechanism!r}"
            )
        if mechanism == PLAIN and not tls:
            raise KafkaSecurityError(
                "kafka_sasl_mechanism", "PLAIN over SASL_PLAINTEXT would send the password in clear text; use SASL_SSL"
            )
        if not sasl_username:
            raise KafkaSecurityError("kafka_sasl_username", f"is required with --kafka_security_protocol={protocol}")
        if not _USERNAME.fullmatch(sasl_username):
            raise KafkaSecurityError(
                "kafka_sasl_username", "must be 1-255 printable characters without spaces, quotes or backslashes"
            )
        if password is None:
            raise KafkaSecurityError("kafka_sasl_password", f"is required with --kafka_security_protocol={protocol}")
    else:
        for option, value in (
            ("kafka_sasl_mechanism", sasl_mechanism),
            ("kafka_sasl_username", sasl_username),
            ("kafka_sasl_password", sasl_password),
        ):
            if value:
                raise KafkaSecurityError(
                    option, "applies only with --kafka_security_protocol=SASL_SSL or SASL_PLAINTEXT"
                )
    if not tls:
        for option, value in (
            ("kafka_ssl_ca_cert", ssl_ca_cert),
            ("kafka_ssl_client_cert", ssl_client_cert),
            ("kafka_ssl_client_key", ssl_client_key),
        ):
            if value:
                raise KafkaSecurityError(option, "applies only with --kafka_security_protocol=SSL or SASL_SSL")
    if bool(ssl_client_cert) != bool(client_key):
        missing = "kafka_ssl_client_key" if ssl_client_cert else "kafka_ssl_client_cert"
        raise KafkaSecurityError(missing, "mutual TLS needs both --kafka_ssl_client_cert and --kafka_ssl_client_key")
    return KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism if sasl else None,
        sasl_username=sasl_username if sasl else None,
        sasl_password=password,
        ca_pem=_pem_file("kafka_ssl_ca_cert", ssl_ca_cert, "the CA certificate(s) to trust, PEM"),
        client_cert_pem=_pem_file("kafka_ssl_client_cert", ssl_client_cert, "the client certificate chain, PEM"),
        client_key=client_key,
        secrets=tuple(ref for ref in (password, client_key) if ref is not None),
    )
