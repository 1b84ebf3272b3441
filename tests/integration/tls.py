"""Test certificates, generated per test session with ``cryptography``: a CA, a server certificate for 127.0.0.1, a
client certificate (mutual TLS), and a second CA nobody trusts.

Keys are EC P-256 in unencrypted PKCS#8 PEM, what Kafka's PEM key stores and librdkafka both read.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca: Path  # CA certificate (PEM): what clients and the broker trust
    server_keystore: Path  # server private key + certificate chain (PEM), the broker's key store
    client_cert: Path  # client certificate chain (PEM)
    client_key: Path  # client private key (PKCS#8 PEM)
    untrusted_ca: Path  # a CA that signed nothing the broker uses


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    pkcs8 = serialization.PrivateFormat.PKCS8
    return key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if server:
        # Clients verify the host name (Kafka's ssl.endpoint.identification.algorithm=https is the default).
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def generate(directory: Path) -> TlsFiles:
    """Writes a fresh CA, server and client certificates to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("realtime-analytics test CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "127.0.0.1", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, "realtime-analytics-pipeline", server=False)
    _, other_ca = _ca("untrusted test CA")
    files = TlsFiles(
        ca=directory / "ca.pem",
        server_keystore=directory / "server.pem",
        client_cert=directory / "client-cert.pem",
        client_key=directory / "client-key.pem",
        untrusted_ca=directory / "untrusted-ca.pem",
    )
    files.ca.write_bytes(_pem_cert(ca_cert))
    files.server_keystore.write_bytes(_pem_key(server_key) + _pem_cert(server_cert) + _pem_cert(ca_cert))
    files.client_cert.write_bytes(_pem_cert(client_cert) + _pem_cert(ca_cert))
    files.client_key.write_bytes(_pem_key(client_key))
    files.untrusted_ca.write_bytes(_pem_cert(other_ca))
    for path in (files.server_keystore, files.client_key):
        path.chmod(0o600)
    return files
