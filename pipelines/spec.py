"""The launch spec: the options resolved once into what builds and runs the job.

``resolve(argv)`` checks every option (one ``ConfigError`` naming the first bad one) and returns a frozen
``LaunchSpec``: the analytics config, the source, both sinks with their settings, and how the job runs. Secrets and
certificates are read here, once; whether the job is streaming is decided here, once. Nothing is written back into
the options: Beam gets its own ``PipelineOptions`` from ``runners.beam_options`` (``graph.new_pipeline``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    PrismRunnerOptions,
    StandardOptions,
)

from pipelines import runners
from pipelines.options import (
    BY_NAME,
    FLINK_CHECKPOINTING,
    FLINK_NEEDS,
    FLINK_OPTIONS,
    AnalyticsOptions,
    ConfigError,
    whole,
)
from pipelines.runners import RunnerSpec
from schemas import AGGREGATES_TABLE, DEAD_LETTER_TABLE
from transforms.analytics import TIMESTAMP_KAFKA, TIMESTAMP_PUBLISH_TIME, AnalyticsConfig
from transforms.batching import GC_THRESHOLDS
from transforms.io import (
    KAFKA,
    PUBSUB,
    SYNTHETIC,
    BigQuerySettings,
    SinkSettings,
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
    check_write_method,
    resolve_endpoint,
    resolve_storage_endpoint,
)
from transforms.io.kafka import KafkaSettings, check_consumer_group, check_start_offset
from transforms.io.kafka_security import PLAINTEXT, KafkaSecurity, KafkaSecurityError, kafka_security
from transforms.io.synthetic import as_replay
from transforms.pseudonymize import load_key
from transforms.secrets import SecretError, resolve_secret
from transforms.validate import CONTRACT_FIELDS
from transforms.windowing import SLIDING, WindowSpec

# Contract fields that are not strings, so not grouping keys.
_NOT_KEYS = ("event_time", "value", "properties")


@dataclass(frozen=True)
class SourceSpec:
    uri: str  # what the job reads: the option's value, or its replay on a simulated clock (see resolve)
    given: str  # the option's value as given
    kafka: KafkaSettings | None = None  # kafka:// sources (without the expansion service: graph.py adds it)

    @property
    def scheme(self) -> str:
        return scheme_of(self.uri)


@dataclass(frozen=True)
class LaunchSpec:
    """Everything that builds and runs one job, resolved from its options."""

    analytics: AnalyticsConfig
    source: SourceSpec
    sink: SinkSettings
    dead_letter_sink: SinkSettings
    runner: RunnerSpec
    argv: tuple[str, ...]  # the flags as given (Beam's own options come from them: runners.beam_options)
    kafka_security: KafkaSecurity = KafkaSecurity()  # read once; also what the start-up check connects with
    # The Kafka secrets the references resolve to, read once here (option name -> value): what the start-up check
    # authenticates with. Never shown, never compared; the job itself gets only the references.
    kafka_secrets: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def streaming(self) -> bool:
        return self.runner.streaming

    @property
    def sinks(self) -> tuple[tuple[str, SinkSettings], ...]:
        """(option name, settings) of both sinks."""
        return (("sink", self.sink), ("dead_letter_sink", self.dead_letter_sink))

    @property
    def cross_language(self) -> bool:
        return any(is_cross_language(uri) for uri in (self.source.uri, self.sink.uri, self.dead_letter_sink.uri))


def _source_kind(source: str) -> str:
    """What records_read_<kind> calls the source: kafka, pubsub, synthetic, file (local or gs:// files)."""
    scheme = scheme_of(source)
    return "file" if scheme in ("", "file", "gs") else scheme


def _given(argv: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


def _value(opts: AnalyticsOptions, name: str, raw: Any | None = None) -> Any:
    """The option's value, read and checked by its table entry."""
    return BY_NAME[name].value(getattr(opts, name) if raw is None else raw)


def resolve(argv: Sequence[str]) -> LaunchSpec:
    """The launch spec of ``argv``; ConfigError naming the first bad option. Reads secrets and certificates."""
    argv = tuple(argv)
    options = PipelineOptions(list(argv))
    opts = options.view_as(AnalyticsOptions)
    requested = options.view_as(StandardOptions).runner or "DirectRunner"

    fmt = _value(opts, "format")
    window = _value(opts, "window")
    size = _value(opts, "window_size")
    period = None
    if window == SLIDING:
        if opts.window_period is None:
            raise ConfigError("--window_period is required with --window=sliding")
        period = whole(1, size)("window_period", opts.window_period)
        if size % period:
            raise ConfigError(f"--window_period must divide --window_size ({size}), got {period}")
    elif opts.window_period is not None:
        raise ConfigError("--window_period applies only to --window=sliding")
    spec = WindowSpec(
        kind=window,
        size_s=size,
        period_s=period,
        gap_s=_value(opts, "session_gap"),
        allowed_lateness_s=_value(opts, "allowed_lateness"),
        early_firing_s=_value(opts, "early_firing"),
    )
    key_field = _key_field(opts.key_field)

    source, sink, dead_letter_sink = opts.source, opts.sink, opts.dead_letter_sink
    for name, uri in (("source", source), ("sink", sink), ("dead_letter_sink", dead_letter_sink)):
        if not uri:
            raise ConfigError(f"--{name} must not be empty")
    try:
        check_source(source, fmt)
    except (UnsupportedUri, ValueError) as exc:
        raise ConfigError(f"--source: {exc}") from None
    if scheme_of(sink) == PUBSUB:
        raise ConfigError("--sink: aggregates cannot go to Pub/Sub (dead letters can: --dead_letter_sink)")
    for name, uri in (("sink", sink), ("dead_letter_sink", dead_letter_sink)):
        try:
            check_sink(uri)
        except (UnsupportedUri, ValueError) as exc:  # ValueError: a malformed pubsub:// URI
            raise ConfigError(f"--{name}: {exc}") from None
    method, endpoint, storage_endpoint = _bigquery_endpoints(opts, (sink, dead_letter_sink))
    try:
        check_start_offset(opts.kafka_start_offset)
    except ValueError as exc:
        raise ConfigError(f"--kafka_start_offset {exc}") from None
    try:
        check_consumer_group(opts.kafka_consumer_group)
    except ValueError as exc:
        raise ConfigError(f"--kafka_consumer_group {exc}") from None
    uses_kafka = KAFKA in (scheme_of(source), scheme_of(sink), scheme_of(dead_letter_sink))
    security, kafka_secrets = _kafka_security(opts, uses_kafka)
    pseudonymization_key = _pseudonymization_key(opts)

    # Streaming is decided here and only here: a replay is a stream on a simulated clock, a broker never ends.
    streaming = bool(options.view_as(StandardOptions).streaming) or is_replay(source) or is_unbounded(source)
    cross_language = any(is_cross_language(uri) for uri in (source, sink, dead_letter_sink))
    if is_replay(source) and not runners.is_direct(requested):
        raise ConfigError(
            "--source: mode=replay (and the default embedded demo) replays through TestStream, which only the "
            "direct runner runs; give a pubsub://, kafka://, gs:// or synthetic:// (without mode=replay) source"
        )
    if runners.is_direct(requested) and cross_language and is_replay(source):
        name = next(n for n, uri in (("sink", sink), ("dead_letter_sink", dead_letter_sink)) if is_cross_language(uri))
        raise ConfigError(
            f"--{name}: {scheme_of(getattr(opts, name))}:// runs Beam's Java KafkaIO (cross-language), which the "
            "direct runner hands to Prism, but a replay (mode=replay, the default embedded demo) is a TestStream, "
            "which only the direct runner's own engine runs; give a kafka://, pubsub://, file or synthetic:// source"
        )
    engine = runners.engine_for(requested, streaming, cross_language)
    if scheme_of(source) == PUBSUB and engine not in runners.PUBSUB_READ_ENGINES:
        runner = requested if engine != runners.PRISM or not runners.is_direct(requested) else "Prism"
        raise ConfigError(
            f"--source: pubsub:// sources run on the direct runner and Dataflow, not on {runner}: Beam's Pub/Sub read "
            "is a Dataflow-native transform (beam:transform:pubsub_read:v1) that other runners do not implement"
        )
    _check_timestamp_source(_value(opts, "timestamp_source"), scheme_of(source))
    flink = _flink_settings(opts, requested)
    checkpointing = [name for name in flink if name in FLINK_CHECKPOINTING]
    if checkpointing and not streaming:
        raise ConfigError(f"--{checkpointing[0]} applies to streaming jobs (a batch job on Flink reruns from start)")

    read_uri = source
    if engine == runners.BUNDLE_BASED_DIRECT_RUNNER and scheme_of(source) == SYNTHETIC and not is_replay(source):
        # Beam's Python direct runner cannot run an unbounded splittable source (PeriodicImpulse) together with
        # processing-time triggers, so locally a streaming synthetic source is replayed on a simulated clock.
        # Portable runners (Prism, Flink, Dataflow) generate forever at `rate` records/s.
        read_uri = as_replay(source)
    bounded_direct = engine == runners.FN_API_RUNNER
    runner = RunnerSpec(
        requested=requested,
        engine=engine,
        streaming=streaming,
        every_core=bounded_direct and not _given(argv, "--direct_num_workers") and runners.uses_every_core(source),
        flink=flink,
        flink_master=options.view_as(FlinkRunnerOptions).flink_master,
        flink_job_server_jar=options.view_as(FlinkRunnerOptions).flink_job_server_jar,
        prism_location=options.view_as(PrismRunnerOptions).prism_location,
        environment_type=options.view_as(PortableOptions).environment_type,
        job_name=_job_name(options, engine),
    )
    kafka = None
    if uses_kafka:
        kafka = KafkaSettings(
            opts.kafka_consumer_group, opts.kafka_start_offset, None, tuple(security.client_config().items())
        )
    bigquery = BigQuerySettings(method, endpoint, storage_endpoint, runner.retries_with_stable_input)

    def sink_settings(uri: str, table_kind: str) -> SinkSettings:
        return SinkSettings(
            uri,
            table_kind,
            streaming,
            bigquery if scheme_of(uri) == BIGQUERY else None,
            kafka if scheme_of(uri) == KAFKA else None,
        )

    analytics = AnalyticsConfig(
        format=fmt,
        max_payload_bytes=_value(opts, "max_payload_bytes"),
        max_clock_skew_s=_value(opts, "max_clock_skew"),
        key_field=key_field,
        dedup_horizon_s=_value(opts, "dedup_horizon"),
        window=spec,
        streaming=streaming,
        timestamp_source=opts.timestamp_source,
        pseudonymization_key=pseudonymization_key,
        source_kind=_source_kind(source),
        # Measured to help bounded input on the direct runner only (docs/benchmarks.md); other runners are left alone.
        gc_thresholds=GC_THRESHOLDS if bounded_direct else None,
    )
    return LaunchSpec(
        analytics=analytics,
        source=SourceSpec(read_uri, source, kafka if scheme_of(source) == KAFKA else None),
        sink=sink_settings(sink, AGGREGATES_TABLE),
        dead_letter_sink=sink_settings(dead_letter_sink, DEAD_LETTER_TABLE),
        runner=runner,
        argv=argv,
        kafka_security=security,
        kafka_secrets=kafka_secrets,
    )


def _job_name(options: PipelineOptions, engine: str) -> str | None:
    """``--job_name`` as given; a Flink job gets a unique one otherwise, so that it can be found on its cluster."""
    given = options.view_as(GoogleCloudOptions).job_name
    if given or engine != runners.FLINK:
        return given
    return f"realtime-analytics-{uuid.uuid4().hex[:12]}"


def _key_field(raw: str | None) -> str:
    key_field = raw.strip() if raw else ""
    if not key_field or key_field == "properties." or key_field in _NOT_KEYS:
        string_fields = ", ".join(f for f in CONTRACT_FIELDS if f not in _NOT_KEYS)
        raise ConfigError(
            f"--key_field must name a string field ({string_fields}), properties.<name> or another top-level "
            f"field, got {raw!r}"
        )
    return key_field


def _bigquery_endpoints(opts: AnalyticsOptions, sinks: Sequence[str]) -> tuple[str, str | None, str | None]:
    """``--bigquery_write_method`` and the emulator endpoints (options, else environment), validated.

    Endpoints are only resolved when a sink is ``bigquery://`` (a stray environment variable harms nothing else).
    """
    try:
        method = check_write_method(opts.bigquery_write_method)
    except ValueError as exc:
        raise ConfigError(f"--bigquery_write_method: {exc}") from None
    endpoint = storage_endpoint = None
    if BIGQUERY in (scheme_of(uri) for uri in sinks):
        try:
            endpoint = resolve_endpoint(opts.bigquery_endpoint)
            if method == STORAGE_WRITE_API:
                storage_endpoint = resolve_storage_endpoint(opts.bigquery_storage_endpoint, endpoint)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return method, endpoint, storage_endpoint


def _kafka_security(opts: AnalyticsOptions, uses_kafka: bool) -> tuple[KafkaSecurity, dict[str, str]]:
    """The ``--kafka_security_protocol``/``--kafka_sasl_*``/``--kafka_ssl_*`` settings, certificates read, and the
    values their secret references resolve to here (each read once)."""
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
        if security.protocol != PLAINTEXT and not uses_kafka:
            raise ConfigError("--kafka_security_protocol applies only to kafka:// sources and sinks")
        secrets = {}
        for option, ref in (
            ("kafka_sasl_password", security.sasl_password),
            ("kafka_ssl_client_key", security.client_key),
        ):
            if ref is not None:
                try:
                    secrets[option] = resolve_secret(ref).decode("utf-8")
                except SecretError as exc:
                    raise KafkaSecurityError(option, str(exc)) from None
    except KafkaSecurityError as exc:
        raise ConfigError(str(exc)) from None
    return security, secrets


def _pseudonymization_key(opts: AnalyticsOptions) -> str | None:
    """The key's reference when pseudonymization is on (the key itself checked: readable, long enough)."""
    on = _value(opts, "pseudonymize_user_id")
    reference = opts.pseudonymization_key
    if not on:
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


def _check_timestamp_source(value: str, source_scheme: str) -> None:
    needs = {TIMESTAMP_PUBLISH_TIME: PUBSUB, TIMESTAMP_KAFKA: KAFKA}
    if value in needs and source_scheme != needs[value]:
        raise ConfigError(f"--timestamp_source={value} needs a {needs[value]}:// source")


def _flink_settings(opts: AnalyticsOptions, requested: str) -> dict[str, int | str]:
    """The Flink options given, validated and typed the way Beam's FlinkPipelineOptions takes them (milliseconds and
    counts as integers). With another runner they are an error (they would be ignored silently)."""
    given = {o.name: getattr(opts, o.name) for o in FLINK_OPTIONS if getattr(opts, o.name) is not None}
    if not given:
        return {}
    if not runners.is_flink(requested):
        raise ConfigError(f"--{next(iter(given))} applies only to --runner=FlinkRunner (the runner is {requested})")
    for name in given:
        if name in FLINK_NEEDS and FLINK_NEEDS[name] not in given:
            raise ConfigError(f"--{name} needs --{FLINK_NEEDS[name]}")
    return {name: BY_NAME[name].value(raw) for name, raw in given.items()}
