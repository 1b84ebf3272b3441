"""Flex template metadata (``templates/metadata.json``), generated from ``AnalyticsOptions``.

Names, help texts and defaults come from the options parser, so the template cannot drift from the CLI; the
regexes (and the values they must accept and reject) live in ``PARAMS`` below, next to the generator. A test
checks that the committed file equals the generated one and that every regex agrees with the real validation.

    python -m pipelines.release.template_metadata            # print the metadata
    python -m pipelines.release.template_metadata --write    # rewrite templates/metadata.json
    python -m pipelines.release.template_metadata --check    # templates/ is consistent: metadata current and valid,
                                                     # Dockerfile base images pinned (`make template`; no Docker)

Regexes are written in the subset that POSIX ERE, Java and Python agree on (no ``\\d``, ``(?:``, lookaround),
anchored with ``^...$``. They check the shape of a value; the launcher still runs the full validation and stops
with a message naming the option.
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.options import FLINK_GROUP, AnalyticsOptions
from transforms.analytics import TIMESTAMP_SOURCES
from transforms.parse import FORMATS
from transforms.windowing import WINDOW_KINDS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
METADATA = TEMPLATES / "metadata.json"
DOCKERFILE = TEMPLATES / "Dockerfile"

TEMPLATE_NAME = "realtime-analytics"
DESCRIPTION = (
    "Raw events (Pub/Sub, files on GCS, or a synthetic generator) -> validated, deduplicated, windowed aggregates "
    "with HLL++ distinct users; every bad record goes to the dead letter with an error code."
)

# Building blocks (mirroring transforms/io and pipelines/options).
_WHOLE = "[0-9]+"  # >= 0
_POSITIVE = "[1-9][0-9]*"  # >= 1
_GCP_PROJECT = "([a-z][-a-z0-9]*([.][-a-z0-9]+)+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]"
_PUBSUB_NAME = "[A-Za-z][-A-Za-z0-9._~%+]{2,254}"
_PUBSUB_SOURCE = f"pubsub://projects/{_GCP_PROJECT}/(topics|subscriptions)/{_PUBSUB_NAME}"
_PUBSUB_TOPIC = f"pubsub://projects/{_GCP_PROJECT}/topics/{_PUBSUB_NAME}"
_BIGQUERY_TABLE = (
    "bigquery://([a-z][-a-z0-9]*([.][-a-z0-9]+)+:)?[a-z][-a-z0-9]{4,28}[a-z0-9][.][A-Za-z0-9_]{1,1024}[.][^./?#]+"
)
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
# The template launches on Dataflow; Kafka needs a runner that runs Java transforms (not the direct runner).
_KAFKA_CONTEXT = ("--source=kafka://127.0.0.1:9092/events", "--runner=DataflowRunner")
# Secret references in examples resolve from these variables (tests/unit/test_template_metadata.py sets them).
EXAMPLE_SECRET_ENV = {"KAFKA_PASSWORD": "example-password", "PSEUDONYMIZATION_KEY": "k" * 48}


@dataclass(frozen=True)
class Param:
    """How one option appears in the template.

    ``examples`` (documented values) must pass the regex and the real validation; ``bad`` must fail both.
    Where the regex deliberately differs from the validation it says so: ``stricter`` values fail the regex although
    the launcher would take them, ``lenient`` ones pass the regex but the launcher refuses them (with a message).
    ``context`` gives other options a value needs, by value (``"*"``: for every value).
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


PARAMS: dict[str, Param] = {
    "source": Param(
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
    "format": Param(
        regex=f"^({'|'.join(FORMATS)})$",
        examples=FORMATS,
        bad=("csv", "JSON ", ""),
        param_type="ENUM",
        enum=FORMATS,
        context={"*": ("--source=data/*.records",)},
    ),
    "sink": Param(
        regex=f"^({_BIGQUERY_TABLE}|{_PATH_PREFIX})$",
        examples=("output/aggregates", "file:///tmp/out/aggregates", "bigquery://my-project.analytics.aggregates"),
        bad=("output/", "pubsub://projects/my-project/topics/aggregates", "gs://my-bucket/out/aggregates", ""),
        label="Aggregates sink",
    ),
    "dead_letter_sink": Param(
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
    "bigquery_write_method": Param(
        regex="^(STREAMING_INSERTS|STORAGE_WRITE_API)$",
        examples=("STREAMING_INSERTS", "STORAGE_WRITE_API"),
        bad=("FILE_LOADS", "fast"),
        label="BigQuery write method",
        param_type="ENUM",
        enum=("STREAMING_INSERTS", "STORAGE_WRITE_API"),
    ),
    "bigquery_endpoint": Param(
        regex="^(https?://)?[A-Za-z0-9.-]+(:[0-9]{1,5})?/?$",
        examples=("http://127.0.0.1:9050", "localhost:9050"),
        bad=("ftp://emulator:21", "http://host:port", "http://host:9050/path"),
        label="BigQuery emulator endpoint",
        note="Tests only: leave empty on Dataflow (the job then uses its service account).",
        context={"*": ("--sink=bigquery://my-project.analytics.aggregates",)},
    ),
    "bigquery_storage_endpoint": Param(
        regex="^([A-Za-z0-9.-]+|\\[[0-9A-Fa-f:.]+\\]):[0-9]{1,5}$",
        examples=("127.0.0.1:9060", "localhost:9060"),
        bad=("http://127.0.0.1:9060", "127.0.0.1", "host:port"),
        lenient=("bigquerystorage.googleapis.com:443",),
        label="BigQuery Storage API emulator address",
        note="Tests only: leave empty on Dataflow (the job then uses its service account).",
        context={
            "*": ("--sink=bigquery://my-project.analytics.aggregates", "--bigquery_write_method=STORAGE_WRITE_API")
        },
    ),
    "kafka_consumer_group": Param(
        regex="^[-A-Za-z0-9._]{1,255}$",
        examples=("realtime-analytics", "analytics.v2"),
        bad=("", " ", "my group", "a" * 256, "group/1"),
        label="Kafka consumer group",
    ),
    "kafka_start_offset": Param(
        regex="^(earliest|latest)$",
        examples=("earliest", "latest"),
        bad=("beginning", "0", ""),
        label="Kafka start offset",
        param_type="ENUM",
        enum=("earliest", "latest"),
    ),
    "kafka_security_protocol": Param(
        regex="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
        examples=("PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"),
        bad=("TLS", "sasl", "SASL-SSL"),
        label="Kafka security protocol",
        param_type="ENUM",
        enum=("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
        context={
            "*": _KAFKA_CONTEXT,
            "SASL_SSL": ("--kafka_sasl_username=analytics", "--kafka_sasl_password=env:KAFKA_PASSWORD"),
            "SASL_PLAINTEXT": ("--kafka_sasl_username=analytics", "--kafka_sasl_password=env:KAFKA_PASSWORD"),
        },
    ),
    "kafka_sasl_mechanism": Param(
        regex="^(SCRAM-SHA-512|SCRAM-SHA-256|PLAIN)$",
        examples=("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"),
        bad=("GSSAPI", "OAUTHBEARER", "scram"),
        label="Kafka SASL mechanism",
        param_type="ENUM",
        enum=("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"),
        note="Default with SASL_*: SCRAM-SHA-512.",
        context={
            "*": (
                *_KAFKA_CONTEXT,
                "--kafka_security_protocol=SASL_SSL",
                "--kafka_sasl_username=analytics",
                "--kafka_sasl_password=env:KAFKA_PASSWORD",
            )
        },
    ),
    "kafka_sasl_username": Param(
        regex="^[!#-~]{1,255}$",
        examples=("analytics", "svc.analytics@example.com"),
        bad=("", "a b", 'a"b'),
        lenient=("a\\b",),
        label="Kafka SASL user name",
        context={
            "*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SASL_SSL", "--kafka_sasl_password=env:KAFKA_PASSWORD")
        },
    ),
    "kafka_sasl_password": Param(
        regex=f"^{_ENV_REF}$",
        examples=("env:KAFKA_PASSWORD",),
        bad=("hunter2", "env:", "env:1BAD", "projects/my-project/secrets/kafka/versions/1"),
        label="Kafka SASL password (secret reference)",
        note="Never the password itself: env:NAME, an environment variable of the launcher and the workers.",
        context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SASL_SSL", "--kafka_sasl_username=analytics")},
    ),
    "kafka_ssl_ca_cert": Param(
        regex=f"^{_PEM_FILE}$",
        examples=(),  # a file must exist to be accepted: tests/unit/test_security_options.py checks real ones
        bad=("kafka://host:9092/ca.pem",),
        label="Kafka CA certificate (PEM file)",
        lenient=("/nonexistent/ca.pem",),
        context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SSL")},
    ),
    "kafka_ssl_client_cert": Param(
        regex=f"^{_PEM_FILE}$",
        examples=(),  # see kafka_ssl_ca_cert
        bad=("kafka://host:9092/client.pem",),
        label="Kafka client certificate (PEM file)",
        lenient=("/nonexistent/client.pem",),
        context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SSL", "--kafka_ssl_client_key=env:KAFKA_PASSWORD")},
    ),
    "kafka_ssl_client_key": Param(
        regex=f"^{_ENV_REF}$",
        examples=(),  # needs --kafka_ssl_client_cert, a file: see kafka_ssl_ca_cert
        bad=("-----BEGIN PRIVATE KEY-----", "env:", "projects/my-project/secrets/key/versions/1"),
        label="Kafka client private key (secret reference)",
        note="Never the key itself: env:NAME holding the PKCS#8 PEM key.",
        context={"*": (*_KAFKA_CONTEXT, "--kafka_security_protocol=SSL")},
    ),
    "timestamp_source": Param(
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
    "window": Param(
        regex=f"^({'|'.join(WINDOW_KINDS)})$",
        examples=WINDOW_KINDS,
        bad=("weekly", "Fixed", ""),
        label="Window kind",
        param_type="ENUM",
        enum=WINDOW_KINDS,
        context={"sliding": ("--window_period=60",)},
    ),
    "window_size": Param(
        regex=f"^{_POSITIVE}$",
        examples=("60", "300", "3600"),
        bad=("-1", "0", "1.5", "5m", ""),
        label="Window size (seconds)",
        param_type="NUMBER",
    ),
    "window_period": Param(
        regex=f"^{_POSITIVE}$",
        examples=("60", "30"),
        bad=("0", "-60", "1m"),
        label="Sliding window period (seconds)",
        param_type="NUMBER",
        context={"*": ("--window=sliding", "--window_size=300")},
    ),
    "session_gap": Param(
        regex=f"^{_POSITIVE}$",
        examples=("300", "1800"),
        bad=("0", "-5", "5m"),
        label="Session gap (seconds)",
        param_type="NUMBER",
    ),
    "early_firing": Param(
        regex=f"^{_WHOLE}$",
        examples=("10", "0"),
        bad=("-1", "often", "2.5"),
        label="Early pane interval (seconds)",
        param_type="NUMBER",
    ),
    "allowed_lateness": Param(
        regex=f"^{_WHOLE}$",
        examples=("600", "0", "3600"),
        bad=("-1", "1h"),
        label="Allowed lateness (seconds)",
        param_type="NUMBER",
    ),
    "dedup_horizon": Param(
        regex=f"^{_WHOLE}$",
        examples=("600", "0", "86400"),
        bad=("-1", "10m"),
        label="Deduplication horizon (seconds)",
        param_type="NUMBER",
    ),
    "key_field": Param(
        regex="^(properties[.][^ .][^ ]*|[A-Za-z_][A-Za-z0-9_]*)$",
        examples=("page", "user_id", "event_type", "properties.country", "campaign"),
        bad=("", " ", "properties."),
        stricter=("my key", "a.b"),
        lenient=("event_time", "value", "properties"),
        label="Grouping key field",
        note="Not event_time, value or properties (not strings).",
    ),
    "max_payload_bytes": Param(
        regex=f"^{_POSITIVE}$",
        examples=("1048576", "65536"),
        bad=("0", "-1", "1MB"),
        label="Maximum record size (bytes)",
        param_type="NUMBER",
    ),
    "max_clock_skew": Param(
        regex=f"^{_WHOLE}$",
        examples=("86400", "0", "300"),
        bad=("-1", "1d"),
        label="Maximum clock skew (seconds)",
        param_type="NUMBER",
    ),
    "pseudonymize_user_id": Param(
        regex="^(true|false|TRUE|FALSE|True|False)$",
        examples=("true", "false"),
        bad=("yes", "1", ""),
        label="Pseudonymize user_id",
        param_type="BOOLEAN",
        context={"true": ("--pseudonymization_key=env:PSEUDONYMIZATION_KEY",)},
    ),
    "pseudonymization_key": Param(
        regex=f"^({_ENV_REF}|{_SECRET_VERSION})$",
        examples=("env:PSEUDONYMIZATION_KEY",),
        bad=("my-secret-hmac-key-0123456789abcdef", "env:", "projects/p/secrets/s"),
        label="Pseudonymization key (secret reference)",
        note="Use a Secret Manager version on Dataflow; never the key itself.",
        context={"*": ("--pseudonymize_user_id=true",)},
    ),
}

# Constructs outside the POSIX ERE / Java / Python common subset.
_NON_PORTABLE = re.compile(r"\\[dDwWsSbB]|\(\?|\[\[:|\\[pP]\{")


def option_actions() -> list[argparse.Action]:
    """The ``AnalyticsOptions`` arguments in declaration order, but not Flink's (no use in a Dataflow template)."""
    parser = argparse.ArgumentParser(add_help=False)
    AnalyticsOptions._add_argparse_args(parser)
    flink = {a.dest for g in parser._action_groups if g.title == FLINK_GROUP for a in g._group_actions}
    return [a for a in parser._actions if a.option_strings and a.dest not in flink]


def _help_text(action: argparse.Action, param: Param) -> str:
    text = " ".join((action.help or "").split())
    if param.required:
        text = re.sub(r"\s*Default:[^.]*\.", "", text)  # the CLI's default does not apply to the template
    if action.default is not None and "Default" not in text and not param.required:
        text += f" Default: {action.default}."
    if param.note:
        text += f" {param.note}"
    return text


def build_metadata() -> dict[str, Any]:
    missing = [a.dest for a in option_actions() if a.dest not in PARAMS]
    stale = sorted(set(PARAMS) - {a.dest for a in option_actions()})
    if missing or stale:
        raise KeyError(
            f"pipelines/release/template_metadata.py PARAMS is out of step with AnalyticsOptions: add {missing}, "
            f"remove {stale}"
        )
    parameters = []
    for action in option_actions():
        param = PARAMS[action.dest]
        entry: dict[str, Any] = {
            "name": action.dest,
            "label": param.label or action.dest.replace("_", " ").capitalize(),
            "helpText": _help_text(action, param),
            "isOptional": not param.required,
            "regexes": [param.regex],
            "paramType": param.param_type,
        }
        if param.enum:
            entry["enumOptions"] = [{"value": value} for value in param.enum]
        if action.default is not None and not param.required:
            entry["defaultValue"] = str(action.default)
        parameters.append(entry)
    return {"name": TEMPLATE_NAME, "description": DESCRIPTION, "parameters": parameters}


def render(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"


def metadata_problems(text: str) -> list[str]:
    """Schema sanity of a metadata.json text: Dataflow's own TemplateMetadata message parses it, names are unique
    and valid, regexes are portable and compile."""
    from google.cloud.dataflow_v1beta3.types import TemplateMetadata

    problems = []
    try:
        TemplateMetadata.from_json(text)  # rejects unknown fields and wrong types, as the service does
    except Exception as exc:  # noqa: BLE001 - protobuf's json_format raises several types
        problems.append(f"not a valid TemplateMetadata: {exc}")
        return problems
    data = json.loads(text)
    names = [p.get("name", "") for p in data.get("parameters", [])]
    if len(names) != len(set(names)):
        problems.append(f"duplicate parameter names: {names}")
    for param in data.get("parameters", []):
        name = param.get("name", "")
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            problems.append(f"parameter name {name!r} is not a pipeline option name")
        for key in ("label", "helpText"):
            if not param.get(key):
                problems.append(f"{name}: {key} is required")
        for regex in param.get("regexes", []):
            if not (regex.startswith("^") and regex.endswith("$")):
                problems.append(f"{name}: regex {regex!r} is not anchored with ^...$")
            if _NON_PORTABLE.search(regex):
                problems.append(f"{name}: regex {regex!r} uses a construct POSIX ERE lacks")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("error", FutureWarning)  # e.g. "possible nested set": not portable
                    re.compile(regex)
            except (re.error, FutureWarning) as exc:
                problems.append(f"{name}: regex {regex!r} does not compile cleanly: {exc}")
    return problems


_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)", re.IGNORECASE | re.MULTILINE)
_COPY_FROM = re.compile(r"^\s*COPY\s+.*--from=(?P<image>\S+)", re.IGNORECASE | re.MULTILINE)
_ARG = re.compile(r"^\s*ARG\s+(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:=(?P<value>\S*))?", re.IGNORECASE | re.MULTILINE)
_STAGE = re.compile(r"^\s*FROM\s+.*\s+AS\s+(?P<name>\S+)\s*$", re.IGNORECASE | re.MULTILINE)


def dockerfile_problems(text: str) -> list[str]:
    """Lint-level checks: every base image pinned by a tag (not ``latest``) or a digest, the two roles present."""
    problems = []
    args = {m["name"]: m["value"] for m in _ARG.finditer(text) if m["value"]}
    stages = {m["name"].lower() for m in _STAGE.finditer(text)}
    images = [m["image"] for m in _FROM.finditer(text)] + [m["image"] for m in _COPY_FROM.finditer(text)]
    for raw in images:
        image = re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: args.get(m.group(1), m.group(0)), raw)
        if image.lower() in stages:
            continue
        if "$" in image:
            problems.append(f"image {raw!r}: a build argument without a pinned default")
            continue
        name, _, digest = image.partition("@")
        tag = name.rsplit("/", 1)[-1].partition(":")[2]
        if digest:
            if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                problems.append(f"image {image!r}: malformed digest")
        elif not tag:
            problems.append(f"image {image!r} is not pinned (no tag or digest)")
        elif tag == "latest":
            problems.append(f"image {image!r} uses the moving tag 'latest'")
    for needle, why in (
        ("apache/beam_python3.11_sdk:2.77.0", "the worker base must be the Beam SDK image of the pinned Beam"),
        ("python311-template-launcher-base", "the flex template launcher binary must be copied in"),
        ("/opt/google/dataflow/python_template_launcher", "the launcher binary's path"),
        ("FLEX_TEMPLATE_PYTHON_PY_FILE", "the launcher needs the pipeline's entry file"),
        ("FLEX_TEMPLATE_PYTHON_SETUP_FILE", "the launcher needs the package's setup.py"),
        ("--require-hashes", "dependencies must be installed from hashed pins"),
        ('ENTRYPOINT ["/opt/apache/beam/boot"]', "the worker container must start Beam's boot"),
    ):
        if needle not in text:
            problems.append(f"missing {needle!r}: {why}")
    for path in re.findall(r'^ENV\s+FLEX_TEMPLATE_PYTHON_\w+="?\$\{WORKDIR\}/(\S+?)"?$', text, flags=re.MULTILINE):
        if not (ROOT / path).exists():
            problems.append(f"FLEX_TEMPLATE_PYTHON_* points to {path}, which is not in the repository")
    return problems


def template_problems() -> list[str]:
    problems = []
    expected = render(build_metadata())
    committed = METADATA.read_text() if METADATA.exists() else ""
    if committed != expected:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(True), expected.splitlines(True), "templates/metadata.json", "generated"
            )
        )
        problems.append(
            f"templates/metadata.json is stale: python -m pipelines.release.template_metadata --write\n{diff}"
        )
    problems += [f"metadata.json: {p}" for p in metadata_problems(expected)]
    problems += [f"Dockerfile: {p}" for p in dockerfile_problems(DOCKERFILE.read_text())]
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.release.template_metadata", description=__doc__.split("\n")[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite templates/metadata.json")
    mode.add_argument("--check", action="store_true", help="exit 1 if templates/ is stale or invalid")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.write:
        METADATA.write_text(render(build_metadata()))
        print(f"wrote {METADATA.relative_to(ROOT)}")
        return 0
    if args.check:
        problems = template_problems()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            return 1
        print("templates/: metadata.json current and valid, Dockerfile base images pinned")
        return 0
    print(render(build_metadata()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
