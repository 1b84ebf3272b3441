"""The one options class of the pipeline, its validation, and its translation into an ``AnalyticsConfig``.

Every user-facing option is declared here once; the flex template metadata and the README options table are
derived from (or checked against) ``AnalyticsOptions``.
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.runners import is_direct, is_flink, reads_pubsub, retries_with_stable_input
from transforms.analytics import (
    TIMESTAMP_KAFKA,
    TIMESTAMP_PAYLOAD,
    TIMESTAMP_PUBLISH_TIME,
    TIMESTAMP_SOURCES,
    AnalyticsConfig,
)
from transforms.io import (
    KAFKA,
    PUBSUB,
    UnsupportedUri,
    check_sink,
    check_source,
    is_cross_language,
    is_replay,
    is_unbounded,
    scheme_of,
)
from transforms.io.bigquery import SCHEME as BIGQUERY
from transforms.io.bigquery import (
    STORAGE_WRITE_API,
    STREAMING_INSERTS,
    check_write_method,
    resolve_endpoint,
    resolve_storage_endpoint,
)
from transforms.io.kafka import DEFAULT_CONSUMER_GROUP, DEFAULT_START_OFFSET, check_consumer_group, check_start_offset
from transforms.io.kafka_security import PLAINTEXT, KafkaSecurity, KafkaSecurityError, kafka_security
from transforms.parse import FORMATS
from transforms.pseudonymize import load_key
from transforms.secrets import SecretError
from transforms.validate import CONTRACT_FIELDS
from transforms.windowing import SLIDING, WINDOW_KINDS, WindowSpec

# 40 minutes of traffic on a simulated clock: bad, duplicate, late and too-late records included.
DEMO_SOURCE = (
    "synthetic://demo?mode=replay&events=1200&rate=0.5&keys=6&users=200&event_types=3"
    "&bad=0.04&duplicates=0.03&late=0.04&too_late=0.03&too_late_by=1200"
)
DEFAULT_SINK = "output/aggregates"
DEFAULT_DEAD_LETTER_SINK = "output/dead_letter"


# Flink runner options: Beam Java's FlinkPipelineOptions under their Python names. The portable runner sends every
# declared option to the job server, which maps checkpointing_interval to checkpointingInterval and so on; declaring
# them here lets the CLI know them (unknown flags are refused) and validate them at start-up.
FLINK_GROUP = "realtime-analytics on Flink (--runner=FlinkRunner)"
FLINK_CHECKPOINTING_MODES = ("EXACTLY_ONCE", "AT_LEAST_ONCE")
FLINK_STATE_BACKENDS = ("filesystem", "rocksdb")
FLINK_OPTIONS = (
    "checkpointing_interval",
    "checkpointing_mode",
    "checkpoint_timeout_millis",
    "min_pause_between_checkpoints",
    "number_of_execution_retries",
    "execution_retry_delay",
    "state_backend",
    "state_backend_storage_path",
    "savepoint_path",
    "max_bundle_size",
    "max_bundle_time_mills",
)
_CHECKPOINTING = (
    "checkpointing_interval",
    "checkpointing_mode",
    "checkpoint_timeout_millis",
    "min_pause_between_checkpoints",
)
_NEEDS = {
    "checkpointing_mode": "checkpointing_interval",
    "checkpoint_timeout_millis": "checkpointing_interval",
    "min_pause_between_checkpoints": "checkpointing_interval",
    "execution_retry_delay": "number_of_execution_retries",
    "state_backend": "state_backend_storage_path",
    "state_backend_storage_path": "state_backend",
}

# Contract fields that are not strings, so not grouping keys.
_NOT_KEYS = ("event_time", "value", "properties")


class ConfigError(ValueError):
    """A bad option value; the message names the option and what it accepts."""


class AnalyticsOptions(PipelineOptions):
    """Options of the realtime-analytics pipeline (standard Beam options come on top)."""

    @classmethod
    def _add_argparse_args(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("realtime-analytics")
        group.add_argument(
            "--source",
            default=DEMO_SOURCE,
            help="Where records come from: a local path or glob (JSON lines, or Avro container files with "
            "--format=avro), pubsub://projects/P/subscriptions/S or pubsub://projects/P/topics/T (streaming), "
            "kafka://HOST:PORT[,HOST:PORT]/TOPIC (streaming, portable runner), or "
            "synthetic://?events=N&rate=R&keys=K&bad=..&duplicates=..&late=..&too_late=.. "
            "(mode=replay replays a bounded stream on a simulated clock). Default: the embedded demo.",
        )
        group.add_argument("--format", default="json", help=f"Record format: {' or '.join(FORMATS)}.")
        group.add_argument(
            "--sink",
            default=DEFAULT_SINK,
            help="Aggregates: a path prefix for newline-delimited JSON files, or bigquery://PROJECT.DATASET.TABLE "
            "(provisioned ahead: python -m pipelines.provision).",
        )
        group.add_argument(
            "--dead_letter_sink",
            default=DEFAULT_DEAD_LETTER_SINK,
            help="Dead letters: a path prefix for newline-delimited JSON files, pubsub://projects/P/topics/T, "
            "kafka://HOST:PORT[,HOST:PORT]/TOPIC or bigquery://PROJECT.DATASET.TABLE.",
        )
        group.add_argument(
            "--bigquery_write_method",
            default=STREAMING_INSERTS,
            help="How bigquery:// sinks write: STREAMING_INSERTS (tabledata.insertAll: at-least-once, best-effort "
            "insertId dedup) or STORAGE_WRITE_API (AppendRows over gRPC: exactly-once on the direct runner, Prism "
            "and Dataflow, at-least-once on other runners; see docs/connectors-bigquery.md).",
        )
        group.add_argument(
            "--bigquery_endpoint",
            default=None,
            help="A BigQuery emulator's URL for bigquery:// sinks, e.g. http://127.0.0.1:9050 (anonymous "
            "credentials). Default: $BIGQUERY_EMULATOR_HOST if set, else Google's endpoint with the job's "
            "credentials.",
        )
        group.add_argument(
            "--bigquery_storage_endpoint",
            default=None,
            help="STORAGE_WRITE_API: a BigQuery emulator's Storage API gRPC address HOST:PORT, e.g. "
            "127.0.0.1:9060 (plaintext, anonymous). Default: $BIGQUERY_EMULATOR_GRPC_HOST if set, else Google's "
            "endpoint with the job's credentials. Required when --bigquery_endpoint names an emulator.",
        )
        group.add_argument(
            "--kafka_consumer_group",
            default=DEFAULT_CONSUMER_GROUP,
            help="kafka:// sources: the Kafka consumer group (group.id) the pipeline reads as.",
        )
        group.add_argument(
            "--kafka_start_offset",
            default=DEFAULT_START_OFFSET,
            help="kafka:// sources: where a consumer group without committed offsets starts: earliest or latest "
            "(auto.offset.reset).",
        )
        group.add_argument(
            "--kafka_security_protocol",
            default=PLAINTEXT,
            help="kafka:// sources and sinks: PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (TLS + SASL).",
        )
        group.add_argument(
            "--kafka_sasl_mechanism",
            default=None,
            help="SASL_* protocols: SCRAM-SHA-512 (the default), SCRAM-SHA-256 or PLAIN (only over SASL_SSL).",
        )
        group.add_argument("--kafka_sasl_username", default=None, help="SASL_* protocols: the user name.")
        group.add_argument(
            "--kafka_sasl_password",
            default=None,
            help="SASL_* protocols: a reference to the password, env:NAME (resolved by the Kafka client in the Java "
            "worker; never the password itself).",
        )
        group.add_argument(
            "--kafka_ssl_ca_cert",
            default=None,
            help="SSL/SASL_SSL: PEM file (local or gs://) of the CA certificate(s) to trust. Default: the JVM's "
            "trusted CAs.",
        )
        group.add_argument(
            "--kafka_ssl_client_cert",
            default=None,
            help="Mutual TLS: PEM file (local or gs://) of the client certificate chain; needs --kafka_ssl_client_key.",
        )
        group.add_argument(
            "--kafka_ssl_client_key",
            default=None,
            help="Mutual TLS: a reference to the client's PKCS#8 PEM private key, env:NAME (never the key itself).",
        )
        group.add_argument(
            "--timestamp_source",
            default=TIMESTAMP_PAYLOAD,
            help="Event time: payload (the record's event_time, default), publish_time (pubsub:// sources) or "
            "kafka_timestamp (kafka:// sources). Taken by the pipeline itself, so it behaves the same on every "
            "runner.",
        )
        group.add_argument("--window", default="fixed", help="Window kind: fixed, sliding or session.")
        group.add_argument("--window_size", default="60", help="Window size in seconds (fixed and sliding).")
        group.add_argument(
            "--window_period", default=None, help="Sliding windows: seconds between window starts (required)."
        )
        group.add_argument("--session_gap", default="300", help="Session windows: gap in seconds that ends one.")
        group.add_argument(
            "--early_firing",
            default="10",
            help="Emit an early (speculative) pane every N seconds of processing time; 0 turns early panes off.",
        )
        group.add_argument(
            "--allowed_lateness",
            default="600",
            help="Seconds after the end of a window during which late data still updates it (LATE panes); "
            "later data goes to the dead letter as too_late.",
        )
        group.add_argument(
            "--dedup_horizon",
            default="600",
            help="An event_id seen again within this many seconds (event time) is dropped as a duplicate.",
        )
        group.add_argument(
            "--key_field",
            default="page",
            help="Grouping key next to event_type: an event field (page, user_id...), properties.<name>, "
            "or any other top-level field. Missing or null gives a null key.",
        )
        group.add_argument(
            "--max_payload_bytes", default=str(1 << 20), help="Records larger than this are dead-lettered."
        )
        group.add_argument(
            "--max_clock_skew",
            default="86400",
            help="Seconds an event_time may be ahead of processing time before it is out of range.",
        )
        group.add_argument(
            "--pseudonymize_user_id",
            nargs="?",
            const="true",
            default="false",
            help="true: replace user_id by its keyed HMAC-SHA256 (64 hex characters) right after validation, so "
            "aggregates, sketches and dead letters never hold a raw user_id (docs/security.md).",
        )
        group.add_argument(
            "--pseudonymization_key",
            default=None,
            help="With --pseudonymize_user_id: a reference to the HMAC key (at least 32 bytes), env:NAME or "
            "projects/P/secrets/S/versions/V (Secret Manager); resolved on each worker, never in the job graph.",
        )
        flink = parser.add_argument_group(FLINK_GROUP)
        flink.add_argument(
            "--checkpointing_interval",
            default=None,
            help="Take a checkpoint every N milliseconds (at least 10): after a failure the job restarts from the last "
            "one, Kafka offsets and all windows, dedup and trigger state included. Streaming only. Default: none.",
        )
        flink.add_argument(
            "--checkpointing_mode",
            default=None,
            help="EXACTLY_ONCE (Flink's default: aligned barriers) or AT_LEAST_ONCE (no alignment, lower latency "
            "under backpressure; the sinks are at-least-once either way). Needs --checkpointing_interval.",
        )
        flink.add_argument(
            "--checkpoint_timeout_millis",
            default=None,
            help="Abort a checkpoint that takes longer than this many milliseconds (at least 10). Needs "
            "--checkpointing_interval. Default: Flink's (10 minutes).",
        )
        flink.add_argument(
            "--min_pause_between_checkpoints",
            default=None,
            help="At least this many milliseconds between the end of one checkpoint and the start of the next. "
            "Needs --checkpointing_interval. Default: 0.",
        )
        flink.add_argument(
            "--number_of_execution_retries",
            default=None,
            help="Restart the job at most N times after a failure, --execution_retry_delay apart. Default: the "
            "cluster's restart strategy (with checkpointing: restarts without limit).",
        )
        flink.add_argument(
            "--execution_retry_delay",
            default=None,
            help="Milliseconds between two restarts. Needs --number_of_execution_retries.",
        )
        flink.add_argument(
            "--state_backend",
            default=None,
            help="Where state lives: filesystem (JVM heap) or rocksdb (local disk, for large state). Needs "
            "--state_backend_storage_path. Default: the cluster's (embedded Flink: JVM heap).",
        )
        flink.add_argument(
            "--state_backend_storage_path",
            default=None,
            help="Where checkpoints are written: a URI every TaskManager can reach (file:///shared/checkpoints, "
            "hdfs://..., s3://...). Needs --state_backend.",
        )
        flink.add_argument(
            "--savepoint_path",
            default=None,
            help="Start from this savepoint or retained checkpoint (a path or URI) instead of empty state, e.g. "
            "after `flink stop --savepointPath` for an upgrade.",
        )
        flink.add_argument(
            "--max_bundle_size",
            default=None,
            help="Elements a bundle takes at most before it is finished and its output flushed downstream. Smaller "
            "means lower latency, larger more throughput. Default: Beam's (1000 streaming, 5000 batch).",
        )
        flink.add_argument(
            "--max_bundle_time_mills",
            default=None,
            help="Milliseconds a bundle stays open at most (Beam's option name). Every fused stage holds elements up "
            "to this long, so it adds to end-to-end latency once per stage. Default: Beam's (1000).",
        )


def _integer(opts: AnalyticsOptions, name: str, minimum: int, maximum: int | None = None) -> int:
    raw = getattr(opts, name)
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"--{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"--{name} must be {bound}, got {value}")
    return value


def analytics_config(options: PipelineOptions) -> AnalyticsConfig:
    """Validates the options and returns the graph's config; raises ConfigError naming the first bad option."""
    opts = options.view_as(AnalyticsOptions)
    streaming = bool(options.view_as(StandardOptions).streaming)
    if opts.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {opts.format!r}")
    if opts.window not in WINDOW_KINDS:
        raise ConfigError(f"--window must be one of {', '.join(WINDOW_KINDS)}, got {opts.window!r}")
    size = _integer(opts, "window_size", 1)
    period = None
    if opts.window == SLIDING:
        if opts.window_period is None:
            raise ConfigError("--window_period is required with --window=sliding")
        period = _integer(opts, "window_period", 1, size)
        if size % period:
            raise ConfigError(f"--window_period must divide --window_size ({size}), got {period}")
    elif opts.window_period is not None:
        raise ConfigError("--window_period applies only to --window=sliding")
    spec = WindowSpec(
        kind=opts.window,
        size_s=size,
        period_s=period,
        gap_s=_integer(opts, "session_gap", 1),
        allowed_lateness_s=_integer(opts, "allowed_lateness", 0),
        early_firing_s=_integer(opts, "early_firing", 0),
    )
    key_field = opts.key_field.strip() if opts.key_field else ""
    if not key_field or key_field == "properties." or key_field in _NOT_KEYS:
        string_fields = ", ".join(f for f in CONTRACT_FIELDS if f not in _NOT_KEYS)
        raise ConfigError(
            f"--key_field must name a string field ({string_fields}), properties.<name> or another top-level "
            f"field, got {opts.key_field!r}"
        )
    for name, uri in (
        ("source", opts.source),
        ("sink", opts.sink),
        ("dead_letter_sink", opts.dead_letter_sink),
    ):
        if not uri:
            raise ConfigError(f"--{name} must not be empty")
    try:
        check_source(opts.source, opts.format)
    except (UnsupportedUri, ValueError) as exc:
        raise ConfigError(f"--source: {exc}") from None
    if scheme_of(opts.sink) == PUBSUB:
        raise ConfigError("--sink: aggregates cannot go to Pub/Sub (dead letters can: --dead_letter_sink)")
    for name in ("sink", "dead_letter_sink"):
        try:
            check_sink(getattr(opts, name))
        except (UnsupportedUri, ValueError) as exc:  # ValueError: a malformed pubsub:// URI
            raise ConfigError(f"--{name}: {exc}") from None
    bigquery_sink_settings(options)
    try:
        check_start_offset(opts.kafka_start_offset)
    except ValueError as exc:
        raise ConfigError(f"--kafka_start_offset {exc}") from None
    try:
        check_consumer_group(opts.kafka_consumer_group)
    except ValueError as exc:
        raise ConfigError(f"--kafka_consumer_group {exc}") from None
    try:
        kafka_security_settings(options).check_secrets_resolve()
    except KafkaSecurityError as exc:
        raise ConfigError(str(exc)) from None
    pseudonymization_key = _pseudonymization_key(opts)
    if is_replay(opts.source) and not is_direct(options):
        raise ConfigError(
            "--source: mode=replay (and the default embedded demo) replays through TestStream, which only the "
            "direct runner runs; give a pubsub://, kafka://, gs:// or synthetic:// (without mode=replay) source"
        )
    if is_direct(options):
        for name in ("source", "sink", "dead_letter_sink"):
            if is_cross_language(getattr(opts, name)):
                raise ConfigError(
                    f"--{name}: {scheme_of(getattr(opts, name))}:// runs Beam's Java KafkaIO (cross-language), which "
                    "the direct runner cannot run; add --runner=PrismRunner (built and cached by the project) or use "
                    "Dataflow"
                )
    if scheme_of(opts.source) == PUBSUB and not reads_pubsub(options):
        runner = options.view_as(StandardOptions).runner
        raise ConfigError(
            f"--source: pubsub:// sources run on the direct runner, Prism, Flink and Dataflow, not on {runner}"
        )
    flink_checkpoints = "checkpointing_interval" in flink_settings(options)
    if scheme_of(opts.source) == PUBSUB and is_flink(options) and not flink_checkpoints:
        raise ConfigError(
            "--checkpointing_interval: a pubsub:// source on Flink acknowledges messages when a checkpoint completes; "
            "give --checkpointing_interval (milliseconds, e.g. 10000)"
        )
    if is_replay(opts.source) or is_unbounded(opts.source):
        streaming = True  # a replay is a stream on a simulated clock; a broker never ends
    _check_timestamp_source(opts.timestamp_source, scheme_of(opts.source))
    checkpointing = [name for name in flink_settings(options) if name in _CHECKPOINTING]
    if checkpointing and not streaming:
        raise ConfigError(f"--{checkpointing[0]} applies to streaming jobs (a batch job on Flink reruns from start)")
    return AnalyticsConfig(
        format=opts.format,
        max_payload_bytes=_integer(opts, "max_payload_bytes", 1),
        max_clock_skew_s=_integer(opts, "max_clock_skew", 0),
        key_field=key_field,
        dedup_horizon_s=_integer(opts, "dedup_horizon", 0),
        window=spec,
        streaming=streaming,
        timestamp_source=opts.timestamp_source,
        pseudonymization_key=pseudonymization_key,
    )


_BOOLEANS = {"true": True, "false": False}


def _pseudonymization_key(opts: AnalyticsOptions) -> str | None:
    """The key's reference when pseudonymization is on (the key itself checked: readable, long enough)."""
    raw = str(opts.pseudonymize_user_id).strip().lower()
    if raw not in _BOOLEANS:
        raise ConfigError(f"--pseudonymize_user_id must be true or false, got {opts.pseudonymize_user_id!r}")
    reference = opts.pseudonymization_key
    if not _BOOLEANS[raw]:
        if reference:
            raise ConfigError("--pseudonymization_key applies only with --pseudonymize_user_id")
        return None
    if not reference:
        raise ConfigError(
            "--pseudonymization_key is required with --pseudonymize_user_id (env:NAME or "
            "projects/P/secrets/S/versions/V)"
        )
    try:
        load_key(reference)  # start-up check only; workers resolve the reference again in their setup
    except SecretError as exc:
        raise ConfigError(f"--pseudonymization_key {exc}") from None
    return reference.strip()


def _uses_kafka(opts: AnalyticsOptions) -> bool:
    return KAFKA in (scheme_of(opts.source), scheme_of(opts.sink), scheme_of(opts.dead_letter_sink))


def kafka_security_settings(options: PipelineOptions) -> KafkaSecurity:
    """The validated ``--kafka_security_protocol``/``--kafka_sasl_*``/``--kafka_ssl_*`` settings (certificates read)."""
    opts = options.view_as(AnalyticsOptions)
    try:
        security = kafka_security(
            opts.kafka_security_protocol,
            opts.kafka_sasl_mechanism,
            opts.kafka_sasl_username,
            opts.kafka_sasl_password,
            opts.kafka_ssl_ca_cert,
            opts.kafka_ssl_client_cert,
            opts.kafka_ssl_client_key,
        )
    except KafkaSecurityError as exc:
        raise ConfigError(str(exc)) from None
    if security.protocol != PLAINTEXT and not _uses_kafka(opts):
        raise ConfigError("--kafka_security_protocol applies only to kafka:// sources and sinks")
    return security


def flink_settings(options: PipelineOptions) -> dict[str, int | str]:
    """The Flink options given, validated and typed the way Beam's FlinkPipelineOptions takes them (milliseconds and
    counts as integers). Raises ConfigError naming the first bad option; with another runner they are an error (they
    would be ignored silently)."""
    opts = options.view_as(AnalyticsOptions)
    given = {name: getattr(opts, name) for name in FLINK_OPTIONS if getattr(opts, name) is not None}
    if not given:
        return {}
    first = next(iter(given))
    if not is_flink(options):
        runner = options.view_as(StandardOptions).runner or "DirectRunner"
        raise ConfigError(f"--{first} applies only to --runner=FlinkRunner (the runner is {runner})")
    for name in given:
        if name in _NEEDS and _NEEDS[name] not in given:
            raise ConfigError(f"--{name} needs --{_NEEDS[name]}")
    settings: dict[str, int | str] = {}
    minimum = {
        "checkpointing_interval": 10,  # Flink's smallest checkpoint interval and timeout
        "checkpoint_timeout_millis": 10,
        "min_pause_between_checkpoints": 0,
        "number_of_execution_retries": 0,
        "execution_retry_delay": 0,
        "max_bundle_size": 1,
        "max_bundle_time_mills": 1,
    }
    for name, lowest in minimum.items():
        if name in given:
            settings[name] = _integer(opts, name, lowest)
    if "checkpointing_mode" in given:
        if opts.checkpointing_mode not in FLINK_CHECKPOINTING_MODES:
            raise ConfigError(
                f"--checkpointing_mode must be one of {', '.join(FLINK_CHECKPOINTING_MODES)}, "
                f"got {opts.checkpointing_mode!r}"
            )
        settings["checkpointing_mode"] = opts.checkpointing_mode
    if "state_backend" in given:
        if opts.state_backend not in FLINK_STATE_BACKENDS:
            raise ConfigError(
                f"--state_backend must be one of {', '.join(FLINK_STATE_BACKENDS)}, got {opts.state_backend!r}"
            )
        path = opts.state_backend_storage_path.strip()
        if not re.match(r"^[a-z][a-z0-9+.-]*://[^ ]+$|^/[^ ]*$", path):
            raise ConfigError(
                "--state_backend_storage_path must be a URI such as file:///data/checkpoints or hdfs://namenode/ck, "
                f"or an absolute path, got {opts.state_backend_storage_path!r}"
            )
        settings["state_backend"], settings["state_backend_storage_path"] = opts.state_backend, path
    if "savepoint_path" in given:
        if not opts.savepoint_path.strip():
            raise ConfigError("--savepoint_path must not be empty")
        settings["savepoint_path"] = opts.savepoint_path.strip()
    return settings


def _check_timestamp_source(value: str, source_scheme: str) -> None:
    needs = {TIMESTAMP_PUBLISH_TIME: PUBSUB, TIMESTAMP_KAFKA: KAFKA}
    if value not in TIMESTAMP_SOURCES:
        raise ConfigError(f"--timestamp_source must be one of {', '.join(TIMESTAMP_SOURCES)}, got {value!r}")
    if value in needs and source_scheme != needs[value]:
        raise ConfigError(f"--timestamp_source={value} needs a {needs[value]}:// source")


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


def bigquery_sink_settings(options: PipelineOptions) -> dict[str, str | bool | None]:
    """``--bigquery_write_method``, the emulator endpoints (options, else env) and the Storage Write delivery mode
    (exactly-once where the runner retries with stable input), validated: WriteRows keywords.

    Endpoints are only resolved when a sink is ``bigquery://`` (a stray environment variable harms nothing else).
    """
    opts = options.view_as(AnalyticsOptions)
    try:
        method = check_write_method(opts.bigquery_write_method)
    except ValueError as exc:
        raise ConfigError(f"--bigquery_write_method: {exc}") from None
    endpoint = storage_endpoint = None
    if BIGQUERY in (scheme_of(opts.sink), scheme_of(opts.dead_letter_sink)):
        try:
            endpoint = resolve_endpoint(opts.bigquery_endpoint)
            if method == STORAGE_WRITE_API:
                storage_endpoint = resolve_storage_endpoint(opts.bigquery_storage_endpoint, endpoint)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return {
        "bigquery_write_method": method,
        "bigquery_endpoint": endpoint,
        "bigquery_storage_endpoint": storage_endpoint,
        "bigquery_exactly_once": retries_with_stable_input(options),
    }


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
