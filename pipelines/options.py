"""The option table: every option of the pipeline, declared once.

Each ``Option`` says its name, default, help, how its value is read and checked, how it appears in the flex
template (regex, label, documented good and bad values) and in the README, and its group. From this one table come
the argparse declarations (``AnalyticsOptions``, so ``--help`` and Beam's own parsing), ``templates/metadata.json``
and the README's options table (``python -m pipelines.release.template_metadata --write`` writes both; a test checks
that they are current). Rules between options (``--window_period`` with ``--window=sliding``, secrets, runners) are
applied once, where the options become a launch spec (``pipelines/spec.py``).

Adding an option: one ``Option(...)`` in ``OPTIONS`` (or ``FLINK_OPTIONS`` for a Flink runner option), reading its
value in ``pipelines/spec.py``, then ``python -m pipelines.release.template_metadata --write``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.analytics import TIMESTAMP_PAYLOAD, TIMESTAMP_SOURCES
from transforms.io.bigquery import STREAMING_INSERTS
from transforms.io.gcp import PROJECT_ID
from transforms.io.kafka import DEFAULT_CONSUMER_GROUP, DEFAULT_START_OFFSET
from transforms.io.kafka_security import PLAINTEXT
from transforms.parse import FORMATS
from transforms.windowing import WINDOW_KINDS

# 40 minutes of traffic on a simulated clock: bad, duplicate, late and too-late records included.
DEMO_SOURCE = (
    "synthetic://demo?mode=replay&events=1200&rate=0.5&keys=6&users=200&event_types=3"
    "&bad=0.04&duplicates=0.03&late=0.04&too_late=0.03&too_late_by=1200"
)
DEFAULT_SINK = "output/aggregates"
DEFAULT_DEAD_LETTER_SINK = "output/dead_letter"

GROUP = "realtime-analytics"
FLINK_GROUP = "realtime-analytics on Flink (--runner=FlinkRunner)"
FLINK_CHECKPOINTING_MODES = ("EXACTLY_ONCE", "AT_LEAST_ONCE")
FLINK_STATE_BACKENDS = ("filesystem", "rocksdb")


class ConfigError(ValueError):
    """A bad option value; the message names the option and what it accepts."""


# ---- reading one value -------------------------------------------------------------------------------------------


def whole(minimum: int, maximum: int | None = None) -> Callable[[str, Any], int]:
    """A whole number in [minimum, maximum]; ConfigError naming the option otherwise."""

    def read(name: str, raw: Any) -> int:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(f"--{name} must be a whole number, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError(f"--{name} must be {bound}, got {value}")
        return value

    return read


def one_of(choices: Sequence[str]) -> Callable[[str, Any], str]:
    def read(name: str, raw: Any) -> str:
        if raw not in choices:
            raise ConfigError(f"--{name} must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    return read


_BOOLEANS = {"true": True, "false": False}


def boolean(name: str, raw: Any) -> bool:
    text = str(raw).strip().lower()
    if text not in _BOOLEANS:
        raise ConfigError(f"--{name} must be true or false, got {raw!r}")
    return _BOOLEANS[text]


def text(name: str, raw: Any) -> Any:
    """Taken as given; the launch spec checks it together with the options it depends on."""
    return raw


# ---- the table ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """How an option appears in the flex template (``templates/metadata.json``).

    ``examples`` (documented values) must pass the regex and the real validation; ``bad`` must fail both.
    Where the regex deliberately differs from the validation it says so: ``stricter`` values fail the regex although
    the launcher would take them, ``lenient`` ones pass the regex but the launcher refuses them (with a message).
    ``context`` gives other options a value needs, by value (``"*"``: for every value).

    Regexes are written in the subset that POSIX ERE, Java and Python agree on (no ``\\d``, ``(?:``, lookaround),
    anchored with ``^...$``. They check the shape of a value; the launcher still runs the full validation.
    """

    regex: str
    examples: tuple[str, ...]
    bad: tuple[str, ...]
    label: str | None = None
    param_type: str = "TEXT"
    enum: tuple[str, ...] = ()
    required: bool = False  # required in the template even though the CLI has a default
    note: str = ""
    stricter: tuple[str, ...] = ()
    lenient: tuple[str, ...] = ()
    context: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def context_for(self, value: str) -> tuple[str, ...]:
        return (*self.context.get("*", ()), *self.context.get(value, ()))


@dataclass(frozen=True)
class Option:
    """One option: its argparse declaration, how a value is read, the template parameter and the README row."""

    name: str
    default: str | None
    help: str
    readme: str  # the README table's "meaning" column (Markdown)
    read: Callable[[str, Any], Any] = text  # (name, raw value) -> the typed value; ConfigError if it is bad
    template: Template | None = None  # None: not a flex template parameter
    readme_default: str | None = None  # the README's "default" column when the default alone would mislead
    group: str = GROUP
    bare: str | None = None  # the value of the flag given without one (``--pseudonymize_user_id``)
    # Bad values for options without a template parameter (the template's ``bad`` serve the others), with ``needs``:
    # other options such a value is tried with, so that this option's own check is the one that refuses it.
    bad: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    def value(self, raw: Any) -> Any:
        return self.read(self.name, raw)

    def bad_values(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(bad value, other options it is tried with), for the test that tries every option as a user would."""
        if self.template is not None:
            return tuple((bad, self.template.context_for(bad)) for bad in self.template.bad)
        return tuple((bad, self.needs) for bad in self.bad)

    def add_to(self, group: argparse._ArgumentGroup) -> None:
        extra: dict[str, Any] = {"nargs": "?", "const": self.bare} if self.bare is not None else {}
        group.add_argument(self.flag, default=self.default, help=self.help, **extra)


# Building blocks of the template regexes (the portable subset; transforms/io holds the real parsers).
_WHOLE = "[0-9]+"  # >= 0
_POSITIVE = "[1-9][0-9]*"  # >= 1
_PUBSUB_NAME = "[A-Za-z][-A-Za-z0-9._~%+]{2,254}"
_PUBSUB_SOURCE = f"pubsub://projects/{PROJECT_ID}/(topics|subscriptions)/{_PUBSUB_NAME}"
_PUBSUB_TOPIC = f"pubsub://projects/{PROJECT_ID}/topics/{_PUBSUB_NAME}"
_BIGQUERY_TABLE = f"bigquery://{PROJECT_ID}[.][A-Za-z0-9_]{{1,1024}}[.][^./?#]+"
_FILES = "((file|gs)://)?[^:]+"  # a local path or glob, file://..., gs://bucket/...
_PATH_PREFIX = "(file://)?[^:]*[^:/]"  # a local path prefix (not a directory)
_SYNTHETIC = "synthetic://[^ ]*"
_KAFKA_SERVER = "([A-Za-z0-9]([-A-Za-z0-9.]*[A-Za-z0-9])?|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}"
_KAFKA = f"kafka://{_KAFKA_SERVER}(,{_KAFKA_SERVER})*/[-A-Za-z0-9._]{{1,249}}"
_ENV_REF = "env:[A-Za-z_][A-Za-z0-9_]{0,254}"
_SECRET_VERSION = (
    "projects/([a-z][-a-z0-9]{4,28}[a-z0-9]|[0-9]{1,20})/secrets/[-A-Za-z0-9_]{1,255}"
    "/versions/([1-9][0-9]{0,18}|latest)"
)
_PEM_FILE = "((file|gs)://)?[^:]+"
# The template launches on Dataflow; Kafka needs a runner that runs Java transforms.
_KAFKA_CONTEXT = ("--source=kafka://127.0.0.1:9092/events", "--runner=DataflowRunner")
_SASL = ("--kafka_sasl_username=analytics", "--kafka_sasl_password=env:KAFKA_PASSWORD")
# Secret references in examples resolve from these variables (the tests set them).
EXAMPLE_SECRET_ENV = {"KAFKA_PASSWORD": "example-password", "PSEUDONYMIZATION_KEY": "k" * 48}
_KAFKA_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
_WRITE_METHODS = ("STREAMING_INSERTS", "STORAGE_WRITE_API")
_START_OFFSETS = ("earliest", "latest")

OPTIONS: tuple[Option, ...] = (
    Option(
        "source",
        DEMO_SOURCE,
        "Where records come from: a local path or glob (JSON lines, or Avro container files with --format=avro), "
        "pubsub://projects/P/subscriptions/S or pubsub://projects/P/topics/T (streaming), "
        "kafka://HOST:PORT[,HOST:PORT]/TOPIC (streaming; the direct runner hands it to Prism), or "
        "synthetic://?events=N&rate=R&keys=K&bad=..&duplicates=..&late=..&too_late=.. "
        "(mode=replay replays a bounded stream on a simulated clock). Default: the embedded demo.",
        readme="a local path or glob (JSON lines; Avro container files with `--format=avro`), "
        "`pubsub://projects/P/subscriptions/S` or `pubsub://projects/P/topics/T` (streaming), "
        "`kafka://HOST:PORT[,HOST:PORT]/TOPIC` (streaming; with the DirectRunner it runs on Prism), or "
        "`synthetic://?events=N&rate=R&keys=K&users=U&bad=..&duplicates=..&late=..&too_late=..&seed=S` "
        "(`mode=replay` replays a bounded stream on a simulated clock; with `--streaming` on Flink/Dataflow it "
        "generates at `rate`/s for `duration` seconds or forever, on the DirectRunner it is replayed)",
        readme_default="the embedded demo",
        template=Template(
            regex=f"^({_PUBSUB_SOURCE}|{_KAFKA}|{_SYNTHETIC}|{_FILES})$",
            examples=(
                "pubsub://projects/my-project/subscriptions/events",
                "pubsub://projects/my-project/topics/events",
                "kafka://broker-1:9092,broker-2:9092/events",
                "gs://my-bucket/events/*.jsonl",
                "data/*.jsonl",
                "synthetic://?events=5000&rate=100&keys=20&users=500&bad=0.03&duplicates=0.02&late=0.02&seed=42",
            ),
            bad=("ftp://host/events.jsonl", "s3://bucket/events/*.jsonl", "pubsub://projects/p/queues/x", ""),
            context={"kafka://broker-1:9092,broker-2:9092/events": ("--runner=DataflowRunner",)},
            required=True,
            note="Required in the template: the CLI's default (the embedded demo) replays through TestStream, which "
            "only the direct runner runs.",
        ),
    ),
    Option(
        "format",
        "json",
        f"Record format: {' or '.join(FORMATS)}.",
        readme="`json` (UTF-8 JSON object per record) or `avro` (schemaless Avro binary of `schemas/event.avsc`; "
        "container files for file input) or `confluent-avro` (Confluent wire format: byte 0, 4-byte schema id from "
        "`schemas/registry.json`, Avro body)",
        read=one_of(FORMATS),
        template=Template(
            regex=f"^({'|'.join(FORMATS)})$",
            examples=FORMATS,
            bad=("csv", "JSON ", ""),
            param_type="ENUM",
            enum=FORMATS,
            context={"*": ("--source=data/*.records",)},
        ),
    ),
    Option(
        "sink",
        DEFAULT_SINK,
        "Aggregates: a path prefix for newline-delimited JSON files, or bigquery://PROJECT.DATASET.TABLE "
        "(provisioned ahead: python -m pipelines.release.provision).",
        readme="aggregates: path prefix of newline-delimited JSON files, or `bigquery://PROJECT.DATASET.TABLE` "
        "(provisioned ahead, [docs/connectors-bigquery.md](docs/connectors-bigquery.md))",
        template=Template(
            regex=f"^({_BIGQUERY_TABLE}|{_PATH_PREFIX})$",
            examples=("output/aggregates", "file:///tmp/out/aggregates", "bigquery://my-project.analytics.aggregates"),
            bad=("output/", "pubsub://projects/my-project/topics/aggregates", "gs://my-bucket/out/aggregates", ""),
            label="Aggregates sink",
        ),
    ),
    Option(
        "dead_letter_sink",
        DEFAULT_DEAD_LETTER_SINK,
        "Dead letters: a path prefix for newline-delimited JSON files, pubsub://projects/P/topics/T, "
        "kafka://HOST:PORT[,HOST:PORT]/TOPIC or bigquery://PROJECT.DATASET.TABLE.",
        readme="dead letters: path prefix of newline-delimited JSON files, `pubsub://projects/P/topics/T`, "
        "`kafka://HOST:PORT[,HOST:PORT]/TOPIC` (with the DirectRunner it runs on Prism) or "
        "`bigquery://PROJECT.DATASET.TABLE`",
        template=Template(
            regex=f"^({_PUBSUB_TOPIC}|{_KAFKA}|{_BIGQUERY_TABLE}|{_PATH_PREFIX})$",
            examples=(
                "output/dead_letter",
                "pubsub://projects/my-project/topics/dead-letters",
                "kafka://broker-1:9092,broker-2:9092/events-dlq",
                "bigquery://my-project.analytics.dead_letter",
            ),
            bad=("pubsub://projects/my-project/subscriptions/dead-letters", "out/", "gs://my-bucket/dlq", ""),
            context={
                "kafka://broker-1:9092,broker-2:9092/events-dlq": (
                    "--runner=DataflowRunner",
                    "--source=pubsub://projects/my-project/subscriptions/events",
                )
            },
        ),
    ),
    Option(
        "bigquery_write_method",
        STREAMING_INSERTS,
        "How bigquery:// sinks write: STREAMING_INSERTS (tabledata.insertAll: at-least-once, best-effort "
        "insertId dedup) or STORAGE_WRITE_API (AppendRows over gRPC: exactly-once on the direct runner, Prism "
        "and Dataflow, at-least-once on other runners; see docs/connectors-bigquery.md).",
        readme="how `bigquery://` sinks write: `STREAMING_INSERTS` (insertAll: at-least-once, best-effort `insertId` "
        "dedup) or `STORAGE_WRITE_API` (AppendRows over gRPC from Python: exactly-once on the direct runner, Prism "
        "and Dataflow, at-least-once elsewhere) — [docs/connectors-bigquery.md](docs/connectors-bigquery.md)",
        template=Template(
            regex=f"^({'|'.join(_WRITE_METHODS)})$",
            examples=_WRITE_METHODS,
            bad=("FILE_LOADS", "fast"),
            label="BigQuery write method",
            param_type="ENUM",
            enum=_WRITE_METHODS,
        ),
    ),
    Option(
        "bigquery_endpoint",
        None,
        "A BigQuery emulator's URL for bigquery:// sinks, e.g. http://127.0.0.1:19050 (anonymous "
        "credentials). Default: $BIGQUERY_EMULATOR_HOST if set, else Google's endpoint with the job's "
        "credentials.",
        readme="`bigquery://` sinks: a BigQuery emulator's URL (anonymous credentials), e.g. "
        "`http://127.0.0.1:19050`; unset = Google's endpoint with the job's credentials",
        readme_default="`$BIGQUERY_EMULATOR_HOST`, else Google",
        template=Template(
            regex="^(https?://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$",
            examples=("http://127.0.0.1:19050", "localhost:19050"),
            bad=("ftp://emulator:21", "http://host:port", "http://host:19050/path"),
            label="BigQuery emulator endpoint",
            note="Tests only: leave empty on Dataflow (the job then uses its service account).",
            context={"*": ("--sink=bigquery://my-project.analytics.aggregates",)},
        ),
    ),
    Option(
        "bigquery_storage_endpoint",
        None,
        "STORAGE_WRITE_API: a BigQuery emulator's Storage API gRPC address HOST:PORT, e.g. "
        "127.0.0.1:19060 (plaintext, anonymous). Default: $BIGQUERY_EMULATOR_GRPC_HOST if set, else Google's "
        "endpoint with the job's credentials. Required when --bigquery_endpoint names an emulator.",
        readme="`STORAGE_WRITE_API`: a BigQuery emulator's Storage API gRPC address `HOST:PORT` (plaintext, "
        "anonymous), e.g. `127.0.0.1:19060`; required with an emulator `--bigquery_endpoint`",
        readme_default="`$BIGQUERY_EMULATOR_GRPC_HOST`, else Google",
        template=Template(
            regex="^([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}$",
            examples=("127.0.0.1:19060", "localhost:19060"),
            bad=("http://127.0.0.1:19060", "127.0.0.1", "host:port"),
            lenient=("bigquerystorage.googleapis.com:443",),
            label="BigQuery Storage API emulator address",
            note="Tests only: leave empty on Dataflow (the job then uses its service account).",
            context={
                "*": (
                    "--sink=bigquery://my-project.analytics.aggregates",
                    "--bigquery_write_method=STORAGE_WRITE_API",
                )
            },
        ),
    ),
    Option(
        "kafka_consumer_group",
        DEFAULT_CONSUMER_GROUP,
        "kafka:// sources: the Kafka consumer group (group.id) the pipeline reads as.",
        readme="`kafka://` sources: the consumer group (`group.id`) the pipeline reads as",
        template=Template(
            regex="^[-A-Za-z0-9._]{1,255}$",
            examples=("realtime-analytics", "analytics.v2"),
            bad=("", " ", "my group", "a" * 256, "group/1"),
            label="Kafka consumer group",
        ),
    ),
    Option(
        "kafka_start_offset",
        DEFAULT_START_OFFSET,
        "kafka:// sources: where a consumer group without committed offsets starts: earliest or latest "
        "(auto.offset.reset).",
        readme="`kafka://` sources: where a group without committed offsets starts, `earliest` or `latest` "
        "([docs/connectors-kafka.md](docs/connectors-kafka.md))",
        template=Template(
            regex="^(earliest|latest)$",
            examples=_START_OFFSETS,
            bad=("beginning", "0", ""),
            label="Kafka start offset",
            param_type="ENUM",
            enum=_START_OFFSETS,
        ),
    ),
    Option(
        "kafka_security_protocol",
        PLAINTEXT,
        "kafka:// sources and sinks: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS + SASL).",
        readme="`kafka://` sources and sinks: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` or `SASL_SSL` (TLS + SASL) "
        "([docs/security.md](docs/security.md))",
        template=Template(
            regex=f"^({'|'.join(_KAFKA_PROTOCOLS)})$",
            examples=("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"),
            bad=("TLS", "sasl", "SASL-SSL"),
            label="Kafka security protocol",
            param_type="ENUM",
            enum=_KAFKA_PROTOCOLS,
            context={"*": _KAFKA_CONTEXT, "SASL_SSL": _SASL, "SASL_PLAINTEXT": _SASL},
        ),
    ),
    Option(
        "kafka_sasl_mechanism",
        None,
        "SASL_* protocols: SCRAM-SHA-512 (the default), SCRAM-SHA-256 or PLAIN (only over SASL_SSL).",
        readme="`SCRAM-SHA-512`, `SCRAM-SHA-256`, or `PLAIN` (only over `SASL_SSL`)",
        readme_default="`SCRAM-SHA-512` with `SASL_*`",
        template=Template(
            regex=f"^({'|'.join(_SASL_MECHANISMS)})$",
            examples=_SASL_MECHANISMS,
            bad=("GSSAPI", "OAUTHBEARER", "scram"),
            label="Kafka SASL mechanism",
            param_type="ENUM",
            enum=_SASL_MECHANISMS,
            note="Default with SASL_*: SCRAM-SHA-512.",
            context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SASL_SSL", *_SASL)},
        ),
    ),
    Option(
        "kafka_sasl_username",
        None,
        "SASL_* protocols: the user name.",
        readme="`SASL_*`: the user name",
        template=Template(
            regex="^[!#-~]{1,255}$",
            examples=("analytics", "svc.analytics@example.com"),
            bad=("", "a b", 'a"b'),
            lenient=("a\\b",),
            label="Kafka SASL user name",
            context={
                "*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SASL_SSL", "--kafka_sasl_password=env:KAFKA_PASSWORD")
            },
        ),
    ),
    Option(
        "kafka_sasl_password",
        None,
        "SASL_* protocols: a reference to the password, env:NAME (resolved by the Kafka client in the Java "
        "worker; never the password itself).",
        readme="`SASL_*`: a secret reference `env:NAME`, resolved by the Kafka client inside the Java worker; a plain "
        "password is refused",
        template=Template(
            regex=f"^{_ENV_REF}$",
            examples=("env:KAFKA_PASSWORD",),
            bad=("hunter2", "env:", "env:1BAD", "projects/my-project/secrets/kafka/versions/1"),
            label="Kafka SASL password (secret reference)",
            note="Never the password itself: env:NAME, an environment variable of the launcher and the workers.",
            context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SASL_SSL", "--kafka_sasl_username=analytics")},
        ),
    ),
    Option(
        "kafka_ssl_ca_cert",
        None,
        "SSL/SASL_SSL: PEM file (local or gs://) of the CA certificate(s) to trust. Default: the JVM's trusted CAs.",
        readme="`SSL`/`SASL_SSL`: PEM file (local or `gs://`) of the CA certificate(s) to trust",
        readme_default="the JVM's trusted CAs",
        template=Template(
            regex=f"^{_PEM_FILE}$",
            examples=(),  # a file must exist to be accepted: tests/unit/test_security_options.py checks real ones
            bad=("kafka://host:9092/ca.pem",),
            label="Kafka CA certificate (PEM file)",
            lenient=("/nonexistent/ca.pem",),
            context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SSL")},
        ),
    ),
    Option(
        "kafka_ssl_client_cert",
        None,
        "Mutual TLS: PEM file (local or gs://) of the client certificate chain; needs --kafka_ssl_client_key.",
        readme="mutual TLS: PEM file (local or `gs://`) of the client certificate chain",
        template=Template(
            regex=f"^{_PEM_FILE}$",
            examples=(),  # see kafka_ssl_ca_cert
            bad=("kafka://host:9092/client.pem",),
            label="Kafka client certificate (PEM file)",
            lenient=("/nonexistent/client.pem",),
            context={
                "*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SSL", "--kafka_ssl_client_key=env:KAFKA_PASSWORD")
            },
        ),
    ),
    Option(
        "kafka_ssl_client_key",
        None,
        "Mutual TLS: a reference to the client's PKCS#8 PEM private key, env:NAME (never the key itself).",
        readme="mutual TLS: a secret reference `env:NAME` to the client's PKCS#8 PEM private key",
        template=Template(
            regex=f"^{_ENV_REF}$",
            examples=(),  # needs --kafka_ssl_client_cert, a file: see kafka_ssl_ca_cert
            bad=("-----BEGIN PRIVATE KEY-----", "env:", "projects/my-project/secrets/key/versions/1"),
            label="Kafka client private key (secret reference)",
            note="Never the key itself: env:NAME holding the PKCS#8 PEM key.",
            context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SSL")},
        ),
    ),
    Option(
        "timestamp_source",
        TIMESTAMP_PAYLOAD,
        "Event time: payload (the record's event_time, default), publish_time (pubsub:// sources) or "
        "kafka_timestamp (kafka:// sources). Taken by the pipeline itself, so it behaves the same on every "
        "runner.",
        readme="event time from the payload's `event_time`, or the source's timestamp: `publish_time` (Pub/Sub) or "
        "`kafka_timestamp` (Kafka); the pipeline takes it itself, so it behaves the same on every runner",
        read=one_of(TIMESTAMP_SOURCES),
        template=Template(
            regex=f"^({'|'.join(TIMESTAMP_SOURCES)})$",
            examples=TIMESTAMP_SOURCES,
            bad=("event_time", "Payload", ""),
            label="Event time source",
            param_type="ENUM",
            enum=TIMESTAMP_SOURCES,
            note="publish_time needs a pubsub:// source, kafka_timestamp a kafka:// source",
            context={
                "publish_time": ("--source=pubsub://projects/my-project/subscriptions/events",),
                "kafka_timestamp": _KAFKA_CONTEXT,
            },
        ),
    ),
    Option(
        "window",
        "fixed",
        "Window kind: fixed, sliding or session.",
        readme="`fixed`, `sliding` or `session`",
        read=one_of(WINDOW_KINDS),
        template=Template(
            regex=f"^({'|'.join(WINDOW_KINDS)})$",
            examples=WINDOW_KINDS,
            bad=("weekly", "Fixed", ""),
            label="Window kind",
            param_type="ENUM",
            enum=WINDOW_KINDS,
            context={"sliding": ("--window_period=60",)},
        ),
    ),
    Option(
        "window_size",
        "60",
        "Window size in seconds (fixed and sliding).",
        readme="seconds (fixed, sliding)",
        read=whole(1),
        template=Template(
            regex=f"^{_POSITIVE}$",
            examples=("60", "300", "3600"),
            bad=("-1", "0", "1.5", "5m", ""),
            label="Window size (seconds)",
            param_type="NUMBER",
        ),
    ),
    Option(
        "window_period",
        None,
        "Sliding windows: seconds between window starts (required).",
        readme="seconds between sliding window starts; required for `sliding`, must divide the size",
        read=whole(1),  # and at most --window_size, which it divides (pipelines/spec.py)
        template=Template(
            regex=f"^{_POSITIVE}$",
            examples=("60", "30"),
            bad=("0", "-60", "1m"),
            label="Sliding window period (seconds)",
            param_type="NUMBER",
            context={"*": ("--window=sliding", "--window_size=300")},
        ),
    ),
    Option(
        "session_gap",
        "300",
        "Session windows: gap in seconds that ends one.",
        readme="seconds of inactivity that end a session",
        read=whole(1),
        template=Template(
            regex=f"^{_POSITIVE}$",
            examples=("300", "1800"),
            bad=("0", "-5", "5m"),
            label="Session gap (seconds)",
            param_type="NUMBER",
        ),
    ),
    Option(
        "early_firing",
        "10",
        "Emit an early (speculative) pane every N seconds of processing time; 0 turns early panes off.",
        readme="an early pane every N seconds of processing time (streaming); `0` = none",
        read=whole(0),
        template=Template(
            regex=f"^{_WHOLE}$",
            examples=("10", "0"),
            bad=("-1", "often", "2.5"),
            label="Early pane interval (seconds)",
            param_type="NUMBER",
        ),
    ),
    Option(
        "allowed_lateness",
        "600",
        "Seconds after the end of a window during which late data still updates it (LATE panes); "
        "later data goes to the dead letter as too_late.",
        readme="seconds after a window's end in which late data still updates it (LATE panes); later data → dead "
        "letter `too_late`",
        read=whole(0),
        template=Template(
            regex=f"^{_WHOLE}$",
            examples=("600", "0", "3600"),
            bad=("-1", "1h"),
            label="Allowed lateness (seconds)",
            param_type="NUMBER",
        ),
    ),
    Option(
        "dedup_horizon",
        "600",
        "An event_id seen again within this many seconds (event time) is dropped as a duplicate.",
        readme="an `event_id` seen again within this many seconds (event time) is dropped and counted",
        read=whole(0),
        template=Template(
            regex=f"^{_WHOLE}$",
            examples=("600", "0", "86400"),
            bad=("-1", "10m"),
            label="Deduplication horizon (seconds)",
            param_type="NUMBER",
        ),
    ),
    Option(
        "key_field",
        "page",
        "Grouping key next to event_type: an event field (page, user_id...), properties.<name>, "
        "or any other top-level field. Missing or null gives a null key.",
        readme="grouping key next to `event_type`: `page`, `user_id`, `event_id`, `event_type`, `properties.<name>` "
        "or any other top-level field; missing/null → null",
        template=Template(
            regex="^(properties[.][^ .][^ ]*|[A-Za-z_][A-Za-z0-9_]*)$",
            examples=("page", "user_id", "event_type", "properties.country", "campaign"),
            bad=("", " ", "properties."),
            stricter=("my key", "a.b"),
            lenient=("event_time", "value", "properties"),
            label="Grouping key field",
            note="Not event_time, value or properties (not strings).",
        ),
    ),
    Option(
        "max_payload_bytes",
        str(1 << 20),
        "Records larger than this are dead-lettered.",
        readme="larger records → dead letter `payload_too_large`",
        read=whole(1),
        template=Template(
            regex=f"^{_POSITIVE}$",
            examples=("1048576", "65536"),
            bad=("0", "-1", "1MB"),
            label="Maximum record size (bytes)",
            param_type="NUMBER",
        ),
    ),
    Option(
        "max_clock_skew",
        "86400",
        "Seconds an event_time may be ahead of processing time before it is out of range.",
        readme="seconds an `event_time` may be ahead of processing time",
        read=whole(0),
        template=Template(
            regex=f"^{_WHOLE}$",
            examples=("86400", "0", "300"),
            bad=("-1", "1d"),
            label="Maximum clock skew (seconds)",
            param_type="NUMBER",
        ),
    ),
    Option(
        "pseudonymize_user_id",
        "false",
        "true: replace user_id by its keyed HMAC-SHA256 (64 hex characters) right after validation, so "
        "aggregates, sketches and dead letters never hold a raw user_id (docs/security.md).",
        readme="`true` (or the bare flag): `user_id` becomes its keyed HMAC-SHA256 (64 lowercase hex characters) "
        "right after validation; aggregates, sketches and dead letters never hold a raw id "
        "([docs/security.md](docs/security.md))",
        read=boolean,
        bare="true",
        template=Template(
            regex="^(true|false|TRUE|FALSE|True|False)$",
            examples=("true", "false"),
            bad=("yes", "1", ""),
            label="Pseudonymize user_id",
            param_type="BOOLEAN",
            context={"true": ("--pseudonymization_key=env:PSEUDONYMIZATION_KEY",)},
        ),
    ),
    Option(
        "pseudonymization_key",
        None,
        "With --pseudonymize_user_id: a reference to the HMAC key (at least 32 bytes), env:NAME or "
        "projects/P/secrets/S/versions/V (Secret Manager); resolved on each worker, never in the job graph.",
        readme="with `--pseudonymize_user_id`: a secret reference to the HMAC key (≥ 32 bytes), `env:NAME` or "
        "`projects/P/secrets/S/versions/V` (Secret Manager); a plain key is refused",
        template=Template(
            regex=f"^({_ENV_REF}|{_SECRET_VERSION})$",
            examples=("env:PSEUDONYMIZATION_KEY",),
            bad=("my-secret-hmac-key-0123456789abcdef", "env:", "projects/p/secrets/s"),
            label="Pseudonymization key (secret reference)",
            note="Use a Secret Manager version on Dataflow; never the key itself.",
            context={"*": ("--pseudonymize_user_id=true",)},
        ),
    ),
)


# ---- Flink runner options ----------------------------------------------------------------------------------------
# Beam Java's FlinkPipelineOptions under their Python names. The portable runner sends every declared option to the
# job server, which maps checkpointing_interval to checkpointingInterval and so on; declaring them here lets the CLI
# know them (unknown flags are refused) and validate them at start-up. Not flex template parameters (a Dataflow job
# has no use for them); with another runner they are refused. The rules between them live in pipelines/spec.py.

_FLINK = ("--runner=FlinkRunner", "--flink_master=[local]", "--streaming", "--source=synthetic://?rate=10")
_CHECKPOINTS = (*_FLINK, "--checkpointing_interval=2000")


def _storage_path(name: str, raw: Any) -> str:
    path = str(raw).strip()
    if not re.match(r"^[a-z][a-z0-9+.-]*://[^ ]+$|^/[^ ]*$", path):
        raise ConfigError(
            "--state_backend_storage_path must be a URI such as file:///data/checkpoints or hdfs://namenode/ck, "
            f"or an absolute path, got {raw!r}"
        )
    return path


def _not_empty(name: str, raw: Any) -> str:
    if not str(raw).strip():
        raise ConfigError(f"--{name} must not be empty")
    return str(raw).strip()


FLINK_OPTIONS: tuple[Option, ...] = (
    Option(
        "checkpointing_interval",
        None,
        "Take a checkpoint every N milliseconds (at least 10): after a failure the job restarts from the last "
        "one, Kafka offsets and all windows, dedup and trigger state included. Streaming only. Default: none.",
        readme="Flink, streaming: a checkpoint every N ms (≥ 10); a failed job restarts from the last one, Kafka "
        "offsets, windows and dedup state included ([docs/runners-flink.md](docs/runners-flink.md))",
        read=whole(10),  # Flink's smallest checkpoint interval
        group=FLINK_GROUP,
        bad=("5", "2s", ""),
        needs=_FLINK,
    ),
    Option(
        "checkpointing_mode",
        None,
        "EXACTLY_ONCE (Flink's default: aligned barriers) or AT_LEAST_ONCE (no alignment, lower latency "
        "under backpressure; the sinks are at-least-once either way). Needs --checkpointing_interval.",
        readme="Flink: `EXACTLY_ONCE` or `AT_LEAST_ONCE`; needs `--checkpointing_interval`",
        readme_default="`EXACTLY_ONCE`",
        read=one_of(FLINK_CHECKPOINTING_MODES),
        group=FLINK_GROUP,
        bad=("exactly_once", "NONE"),
        needs=_CHECKPOINTS,
    ),
    Option(
        "checkpoint_timeout_millis",
        None,
        "Abort a checkpoint that takes longer than this many milliseconds (at least 10). Needs "
        "--checkpointing_interval. Default: Flink's (10 minutes).",
        readme="Flink: abort a checkpoint taking longer (ms, ≥ 10); needs `--checkpointing_interval`",
        readme_default="Flink's (10 min)",
        read=whole(10),
        group=FLINK_GROUP,
        bad=("0", "1m"),
        needs=_CHECKPOINTS,
    ),
    Option(
        "min_pause_between_checkpoints",
        None,
        "At least this many milliseconds between the end of one checkpoint and the start of the next. "
        "Needs --checkpointing_interval. Default: 0.",
        readme="Flink: ms from the end of one checkpoint to the start of the next; needs `--checkpointing_interval`",
        readme_default="`0`",
        read=whole(0),
        group=FLINK_GROUP,
        bad=("-1", "soon"),
        needs=_CHECKPOINTS,
    ),
    Option(
        "number_of_execution_retries",
        None,
        "Restart the job at most N times after a failure, --execution_retry_delay apart. Default: the "
        "cluster's restart strategy (with checkpointing: restarts without limit).",
        readme="Flink: restart a failed job at most N times (Flink's default with checkpointing: no limit)",
        readme_default="the cluster's",
        read=whole(0),
        group=FLINK_GROUP,
        bad=("-1", "many"),
        needs=_FLINK,
    ),
    Option(
        "execution_retry_delay",
        None,
        "Milliseconds between two restarts. Needs --number_of_execution_retries.",
        readme="Flink: ms between restarts; needs `--number_of_execution_retries`",
        readme_default="the cluster's",
        read=whole(0),
        group=FLINK_GROUP,
        bad=("-1", "1s"),
        needs=(*_FLINK, "--number_of_execution_retries=3"),
    ),
    Option(
        "state_backend",
        None,
        "Where state lives: filesystem (JVM heap) or rocksdb (local disk, for large state). Needs "
        "--state_backend_storage_path. Default: the cluster's (embedded Flink: JVM heap).",
        readme="Flink: `filesystem` (JVM heap) or `rocksdb` (local disk, large state); needs "
        "`--state_backend_storage_path`",
        readme_default="the cluster's",
        read=one_of(FLINK_STATE_BACKENDS),
        group=FLINK_GROUP,
        bad=("memory", "RocksDB"),
        needs=(*_FLINK, "--state_backend_storage_path=file:///ck"),
    ),
    Option(
        "state_backend_storage_path",
        None,
        "Where checkpoints are written: a URI every TaskManager can reach (file:///shared/checkpoints, "
        "hdfs://..., s3://...). Needs --state_backend.",
        readme="Flink: where checkpoints go, a URI every TaskManager reaches (`file:///shared/ck`, `hdfs://...`, "
        "`s3://...`); needs `--state_backend`",
        read=_storage_path,
        group=FLINK_GROUP,
        bad=("ck", "relative/dir"),
        needs=(*_FLINK, "--state_backend=rocksdb"),
    ),
    Option(
        "savepoint_path",
        None,
        "Start from this savepoint or retained checkpoint (a path or URI) instead of empty state, e.g. "
        "after `flink stop --savepointPath` for an upgrade.",
        readme="Flink: start from this savepoint or retained checkpoint instead of empty state",
        read=_not_empty,
        group=FLINK_GROUP,
        bad=(" ",),
        needs=_FLINK,
    ),
    Option(
        "max_bundle_size",
        None,
        "Elements a bundle takes at most before it is finished and its output flushed downstream. Smaller "
        "means lower latency, larger more throughput. Default: Beam's (1000 streaming, 5000 batch).",
        readme="Flink: elements per bundle at most (smaller: lower latency, larger: more throughput)",
        readme_default="Beam's (1000 streaming)",
        read=whole(1),
        group=FLINK_GROUP,
        bad=("0", "big"),
        needs=_FLINK,
    ),
    Option(
        "max_bundle_time_mills",
        None,
        "Milliseconds a bundle stays open at most (Beam's option name). Every fused stage holds elements up "
        "to this long, so it adds to end-to-end latency once per stage. Default: Beam's (1000).",
        readme="Flink: ms a bundle stays open at most; each fused stage can hold a record this long",
        readme_default="Beam's (1000)",
        read=whole(1),
        group=FLINK_GROUP,
        bad=("0", "0.5"),
        needs=_FLINK,
    ),
)
# The options that depend on another one (checked in pipelines/spec.py: "--X needs --Y").
FLINK_NEEDS = {
    "checkpointing_mode": "checkpointing_interval",
    "checkpoint_timeout_millis": "checkpointing_interval",
    "min_pause_between_checkpoints": "checkpointing_interval",
    "execution_retry_delay": "number_of_execution_retries",
    "state_backend": "state_backend_storage_path",
    "state_backend_storage_path": "state_backend",
}
FLINK_CHECKPOINTING = (
    "checkpointing_interval",
    "checkpointing_mode",
    "checkpoint_timeout_millis",
    "min_pause_between_checkpoints",
)

ALL_OPTIONS: tuple[Option, ...] = OPTIONS + FLINK_OPTIONS
BY_NAME: dict[str, Option] = {option.name: option for option in ALL_OPTIONS}


class AnalyticsOptions(PipelineOptions):
    """Options of the realtime-analytics pipeline (standard Beam options come on top), generated from the table."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        groups: dict[str, argparse._ArgumentGroup] = {}
        for option in ALL_OPTIONS:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group)
            option.add_to(groups[option.group])


# ---- flags no options class declares -----------------------------------------------------------------------------


def _all_options_parser() -> argparse.ArgumentParser:
    """A parser with every option of every registered PipelineOptions class; it raises instead of exiting."""
    parser = argparse.ArgumentParser(
        add_help=False, conflict_handler="resolve", allow_abbrev=False, exit_on_error=False
    )
    seen: set[type] = set()
    stack = list(PipelineOptions.__subclasses__())
    while stack:
        cls = stack.pop()
        if cls in seen:
            continue
        seen.add(cls)
        stack.extend(cls.__subclasses__())
        cls._add_argparse_args(parser)
    return parser


def known_flags() -> set[str]:
    """Every ``--flag`` any registered PipelineOptions class declares (to catch typos such as --windw_size)."""
    flags: set[str] = set()
    for action in _all_options_parser()._actions:
        flags.update(s for s in action.option_strings if s.startswith("--"))
    return flags


def check_unknown_flags(argv: Sequence[str]) -> None:
    known = known_flags()
    for arg in argv:
        if arg.startswith("--"):
            flag = arg.split("=", 1)[0]
            if flag not in known:
                raise ConfigError(f"unknown option {flag}; see --help for the options")
    # Beam's own parsing would print argparse's usage and exit (e.g. "--window_size" without a value).
    try:
        _all_options_parser().parse_known_args(list(argv))
    except argparse.ArgumentError as exc:
        raise ConfigError(str(exc)) from None
