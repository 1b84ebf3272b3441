"""Security options and name validation at start-up: every bad value stops the CLI with exit code 2 and one line
naming the option (never repeating a secret); Kafka client properties carry secret references, never secrets."""

from __future__ import annotations

import re

import pytest

from pipelines.options import BY_NAME
from pipelines.spec import resolve
from pipelines.streaming_analytics import main
from transforms.io.kafka_security import ENV_PROVIDER_CLASS, kafka_security
from transforms.secrets import ENV, SECRET_MANAGER, SecretError, SecretRef, parse_secret_ref

SAFE = ["--sink=/nonexistent-dir-for-tests/agg", "--dead_letter_sink=/nonexistent-dir-for-tests/dlq"]
KAFKA = "--source=kafka://127.0.0.1:9092/events"
PASSWORD_ENV = "RA_TEST_SECURITY_PASSWORD"
KEY_ENV = "RA_TEST_SECURITY_KEY"
PLAIN_SECRET = "Hunter2-plain-secret-value"
CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2E=\n-----END CERTIFICATE-----\n"
KEY_PEM = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n-----END PRIVATE KEY-----\n"
SASL = ["--kafka_security_protocol=SASL_SSL", "--kafka_sasl_username=analytics"]


@pytest.fixture(autouse=True)
def _secrets(monkeypatch):
    monkeypatch.setenv(PASSWORD_ENV, "the-password")
    monkeypatch.setenv(KEY_ENV, "k" * 40)
    monkeypatch.setenv("RA_TEST_SHORT_KEY", "k" * 31)
    monkeypatch.delenv("RA_TEST_UNSET", raising=False)


@pytest.fixture
def pem_files(tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(CA_PEM)
    with_key = tmp_path / "with-key.pem"
    with_key.write_text(KEY_PEM + CA_PEM)
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    return {"ca": str(ca), "with_key": str(with_key), "garbage": str(garbage), "missing": str(tmp_path / "no.pem")}


BAD = [
    # Kafka security
    ([KAFKA, "--kafka_security_protocol=TLS"], "--kafka_security_protocol"),
    (["--kafka_security_protocol=SSL"], "--kafka_security_protocol"),  # no kafka:// source or sink
    (
        [KAFKA, "--kafka_security_protocol=SASL_SSL", f"--kafka_sasl_password=env:{PASSWORD_ENV}"],
        "--kafka_sasl_username",
    ),
    ([KAFKA, *SASL], "--kafka_sasl_password"),  # missing
    ([KAFKA, *SASL, f"--kafka_sasl_password={PLAIN_SECRET}"], "--kafka_sasl_password"),
    ([KAFKA, *SASL, "--kafka_sasl_password=env:RA_TEST_UNSET"], "--kafka_sasl_password"),
    ([KAFKA, *SASL, "--kafka_sasl_password=projects/my-project/secrets/kafka/versions/1"], "--kafka_sasl_password"),
    (
        [KAFKA, *SASL, f"--kafka_sasl_password=env:{PASSWORD_ENV}", "--kafka_sasl_mechanism=GSSAPI"],
        "--kafka_sasl_mechanism",
    ),
    (
        [
            KAFKA,
            "--kafka_security_protocol=SASL_PLAINTEXT",
            "--kafka_sasl_username=a",
            "--kafka_sasl_mechanism=PLAIN",
            f"--kafka_sasl_password=env:{PASSWORD_ENV}",
        ],
        "--kafka_sasl_mechanism",
    ),  # fmt: skip
    (
        [
            KAFKA,
            "--kafka_security_protocol=SASL_SSL",
            '--kafka_sasl_username=a"b',
            f"--kafka_sasl_password=env:{PASSWORD_ENV}",
        ],
        "--kafka_sasl_username",
    ),  # fmt: skip
    ([KAFKA, "--kafka_sasl_username=analytics"], "--kafka_sasl_username"),  # SASL option without SASL
    ([KAFKA, "--kafka_ssl_ca_cert={ca}"], "--kafka_ssl_ca_cert"),  # TLS option without TLS
    ([KAFKA, "--kafka_security_protocol=SSL", "--kafka_ssl_ca_cert={missing}"], "--kafka_ssl_ca_cert"),
    ([KAFKA, "--kafka_security_protocol=SSL", "--kafka_ssl_ca_cert={garbage}"], "--kafka_ssl_ca_cert"),
    ([KAFKA, "--kafka_security_protocol=SSL", "--kafka_ssl_ca_cert={with_key}"], "--kafka_ssl_ca_cert"),
    ([KAFKA, "--kafka_security_protocol=SSL", "--kafka_ssl_client_cert={ca}"], "--kafka_ssl_client_key"),
    ([KAFKA, "--kafka_security_protocol=SSL", f"--kafka_ssl_client_key=env:{PASSWORD_ENV}"], "--kafka_ssl_client_cert"),
    (
        [
            KAFKA,
            "--kafka_security_protocol=SSL",
            "--kafka_ssl_client_cert={ca}",
            f"--kafka_ssl_client_key={PLAIN_SECRET}",
        ],
        "--kafka_ssl_client_key",
    ),  # fmt: skip
    # pseudonymization
    (["--pseudonymize_user_id"], "--pseudonymization_key"),
    (["--pseudonymize_user_id=yes", f"--pseudonymization_key=env:{KEY_ENV}"], "--pseudonymize_user_id"),
    ([f"--pseudonymization_key=env:{KEY_ENV}"], "--pseudonymization_key"),  # without --pseudonymize_user_id
    (["--pseudonymize_user_id", f"--pseudonymization_key={PLAIN_SECRET}"], "--pseudonymization_key"),
    (["--pseudonymize_user_id", "--pseudonymization_key=env:RA_TEST_UNSET"], "--pseudonymization_key"),
    (["--pseudonymize_user_id", "--pseudonymization_key=env:RA_TEST_SHORT_KEY"], "--pseudonymization_key"),
    (["--pseudonymize_user_id", "--pseudonymization_key=projects/p/secrets/s/versions/0"], "--pseudonymization_key"),
    # names: Kafka topics, servers, consumer groups
    (["--source=kafka://127.0.0.1:9092/.."], "--source"),
    (["--source=kafka://127.0.0.1:9092/" + "t" * 250], "--source"),
    (["--source=kafka://127.0.0.1:9092/events!"], "--source"),
    (["--source=kafka://127.0.0.1:0/events"], "--source"),
    (["--source=kafka://127.0.0.1:70000/events"], "--source"),
    (["--source=kafka://broker_1:9092/events"], "--source"),
    (["--source=kafka://127.0.0.1/events"], "--source"),
    (["--source=kafka://127.0.0.1:9092,/events"], "--source"),
    (["--dead_letter_sink=kafka://127.0.0.1:9092/"], "--dead_letter_sink"),
    ([KAFKA, "--kafka_consumer_group=my group"], "--kafka_consumer_group"),
    ([KAFKA, "--kafka_consumer_group=" + "g" * 256], "--kafka_consumer_group"),
    ([KAFKA, "--kafka_consumer_group="], "--kafka_consumer_group"),
    # names: Pub/Sub projects, topics, subscriptions
    (["--source=pubsub://projects/My-Project/subscriptions/events"], "--source"),
    (["--source=pubsub://projects/abc/subscriptions/events"], "--source"),  # project id < 6 characters
    (["--source=pubsub://projects/a....b-project/subscriptions/events"], "--source"),
    (["--source=pubsub://projects/my-project-/subscriptions/events"], "--source"),
    (["--source=pubsub://projects/my-project/subscriptions/ev"], "--source"),  # < 3 characters
    (["--source=pubsub://projects/my-project/subscriptions/1events"], "--source"),
    (["--source=pubsub://projects/my-project/subscriptions/" + "s" * 256], "--source"),
    (["--source=pubsub://projects/my-project/subscriptions/goog-events"], "--source"),
    (["--source=pubsub://projects/my-project/topics/ev ents"], "--source"),
    (["--dead_letter_sink=pubsub://projects/my-project/topics/GOOGle"], "--dead_letter_sink"),
    # names: BigQuery
    (["--sink=bigquery://my-project.analytics.agg$20240101"], "--sink"),
    (["--sink=bigquery://my-project.analy-tics.agg"], "--sink"),
    (["--dead_letter_sink=bigquery://MyProject.analytics.dlq"], "--dead_letter_sink"),
]


@pytest.mark.parametrize(("argv", "option"), BAD, ids=[" ".join(a)[:90] for a, _ in BAD])
def test_bad_security_option_or_name_exits_2_with_one_line(argv, option, pem_files, capsys):
    argv = [a.format(**pem_files) for a in argv]
    args = argv + [s for s in SAFE if s.split("=")[0] not in {a.split("=")[0] for a in argv}]
    assert main(args) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 2, captured.err
    assert err[0].startswith("error: ") and option in err[0], err[0]
    assert "Traceback" not in captured.err and captured.out == ""
    assert PLAIN_SECRET not in captured.err and "the-password" not in captured.err  # secrets are never repeated


def test_good_names_pass():
    for argv in (
        ["--source=pubsub://projects/example.com:my-project/subscriptions/events.v2~x%2B"],
        [
            "--source=kafka://[::1]:9092,broker-1.example.com:9093/events_v2.x-y",
            "--kafka_consumer_group=a.b_c-1",
        ],
        ["--source=pubsub://projects/my-project/topics/" + "t" * 255],
    ):
        resolve([*argv, *SAFE])


# ---- Kafka client properties ---------------------------------------------------------------------------------------


def test_sasl_ssl_properties_hold_references_not_secrets(pem_files):
    security = kafka_security(
        "SASL_SSL", None, "analytics", f"env:{PASSWORD_ENV}", pem_files["ca"], pem_files["ca"], f"env:{KEY_ENV}"
    )
    config = security.client_config()
    assert config == {
        "security.protocol": "SASL_SSL",
        "ssl.truststore.type": "PEM",
        "ssl.truststore.certificates": CA_PEM,
        "ssl.keystore.type": "PEM",
        "ssl.keystore.certificate.chain": CA_PEM,
        "ssl.keystore.key": "${env:" + KEY_ENV + "}",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.jaas.config": 'org.apache.kafka.common.security.scram.ScramLoginModule required username="analytics" '
        'password="${env:' + PASSWORD_ENV + '}";',
        "config.providers": "env",
        "config.providers.env.class": ENV_PROVIDER_CLASS,
    }
    assert "the-password" not in str(config) and "k" * 40 not in str(config)
    security.check_secrets_resolve()


def test_plaintext_adds_nothing_and_ssl_without_ca_uses_the_jvm_trust_store():
    assert kafka_security().client_config() == {}
    assert kafka_security("ssl").client_config() == {"security.protocol": "SSL"}


# ---- secret references ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        ("env:HMAC_KEY", SecretRef(ENV, "HMAC_KEY")),
        (" env:_k1 ", SecretRef(ENV, "_k1")),
        (
            "projects/my-project/secrets/hmac-key/versions/3",
            SecretRef(SECRET_MANAGER, "projects/my-project/secrets/hmac-key/versions/3"),
        ),  # fmt: skip
        (
            "projects/123456789012/secrets/k_1/versions/latest",
            SecretRef(SECRET_MANAGER, "projects/123456789012/secrets/k_1/versions/latest"),
        ),  # fmt: skip
    ],
)
def test_secret_references(text, ref):
    assert parse_secret_ref(text) == ref
    assert re.fullmatch(BY_NAME["pseudonymization_key"].template.regex, text.strip())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "plain-secret",
        "env:",
        "env:9X",
        "env:A-B",
        "ENV:X",
        "projects/p/secrets/s/versions/1",  # project id too short
        "projects/my-project/secrets/s/versions/0",
        "projects/my-project/secrets/s",
        "projects/my-project/secrets/s/versions/1/extra",
        "gcp:projects/my-project/secrets/s/versions/1",
    ],
)
def test_bad_secret_references(text):
    with pytest.raises(SecretError):
        parse_secret_ref(text)
    assert not re.fullmatch(BY_NAME["pseudonymization_key"].template.regex, text)
