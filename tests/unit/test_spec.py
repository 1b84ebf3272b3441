"""The launch spec: options resolved once into what builds and runs the job.

Streaming is decided in one place; secrets and certificates are read once; the GC tweak is set only where it was
measured to help; the engine is chosen once (the direct runner hands cross-language pipelines to Prism); Beam gets
its own options and the user's are never written to.
"""

from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines import runners, spec
from pipelines.options import ConfigError
from pipelines.spec import resolve
from transforms.batching import GC_THRESHOLDS
from transforms.io import kafka_security, synthetic

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2E=\n-----END CERTIFICATE-----\n"
SINKS = ["--sink=/nonexistent-dir-for-tests/agg", "--dead_letter_sink=/nonexistent-dir-for-tests/dlq"]


@pytest.mark.parametrize(
    ("argv", "streaming"),
    [
        (["--source=in.jsonl"], False),
        (["--source=in.jsonl", "--streaming"], True),
        (["--source=synthetic://?events=5&mode=replay"], True),  # a stream on a simulated clock
        (["--source=kafka://b:1/t"], True),  # a broker never ends
        (["--source=pubsub://projects/my-project/subscriptions/events"], True),
        (["--source=synthetic://?events=5"], False),
    ],
)
def test_streaming_is_decided_once_and_everything_follows_it(argv, streaming):
    launch = resolve([*argv, *SINKS])
    assert launch.streaming is streaming
    assert launch.analytics.streaming is launch.runner.streaming is streaming
    assert launch.sink.streaming is launch.dead_letter_sink.streaming is streaming
    beam = runners.beam_options(launch.runner, launch.argv)
    assert bool(beam.view_as(StandardOptions).streaming) is streaming
    # The user's options, as given, are not written to: Beam got its own object.
    assert bool(PipelineOptions(list(launch.argv)).view_as(StandardOptions).streaming) is ("--streaming" in argv)


@pytest.mark.parametrize(
    ("argv", "engine", "gc_thresholds"),
    [
        (["--source=in.jsonl"], runners.FN_API_RUNNER, GC_THRESHOLDS),  # bounded, direct: measured to help
        (["--source=in.jsonl", "--streaming"], runners.BUNDLE_BASED_DIRECT_RUNNER, None),
        (["--source=in.jsonl", "--runner=FlinkRunner"], runners.FLINK, None),
        (["--source=in.jsonl", "--runner=PrismRunner"], runners.PRISM, None),
        (["--source=in.jsonl", "--runner=DataflowRunner"], "DataflowRunner", None),
        (["--source=kafka://b:1/t"], runners.PRISM, None),  # the direct runner hands Java transforms to Prism
        (["--source=in.jsonl", "--dead_letter_sink=kafka://b:1/dlq"], runners.PRISM, None),
    ],
)
def test_the_engine_and_the_gc_tweak_are_decided_once(argv, engine, gc_thresholds):
    launch = resolve([*SINKS, *argv])
    assert launch.runner.engine == engine
    assert launch.analytics.gc_thresholds == gc_thresholds


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        ("in.jsonl", "file"),
        ("file:///in/*.jsonl", "file"),
        ("gs://b/in/*.avro", "file"),
        ("kafka://b:1/t", "kafka"),
        ("synthetic://?events=10", "synthetic"),
    ],
)
def test_records_read_are_also_counted_per_source_kind(source, kind):
    assert resolve([*SINKS, f"--source={source}"]).analytics.source_kind == kind


def test_the_direct_runner_on_prism_says_so_and_keeps_replays_to_itself():
    launch = resolve(["--source=kafka://b:1/t", *SINKS])
    assert launch.runner.stands_in and launch.runner.describe() == "DirectRunner on Prism"
    assert runners.beam_options(launch.runner, launch.argv).view_as(StandardOptions).runner == "PrismRunner"
    with pytest.raises(ConfigError, match="^--dead_letter_sink: kafka:// .* a replay"):
        resolve(["--dead_letter_sink=kafka://b:1/dlq"])  # the default source, the demo, is a replay


def test_a_streaming_synthetic_source_is_replayed_on_the_direct_runner_only():
    direct = resolve(["--source=synthetic://?events=50&rate=5", "--streaming", *SINKS])
    assert synthetic.parse_synthetic_uri(direct.source.uri).mode == "replay"
    assert direct.source.given == "synthetic://?events=50&rate=5"
    flink = resolve(["--source=synthetic://?rate=5", "--streaming", "--runner=FlinkRunner", *SINKS])
    assert flink.source.uri == flink.source.given


def test_secrets_and_certificates_are_read_once(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text(CA_PEM)
    monkeypatch.setenv("RA_TEST_SPEC_PASSWORD", "the-secret-password")
    reads: list[str] = []
    read_small = kafka_security._read_small
    monkeypatch.setattr(kafka_security, "_read_small", lambda path: reads.append(path) or read_small(path))
    resolved: list[object] = []
    resolve_secret = spec.resolve_secret
    monkeypatch.setattr(spec, "resolve_secret", lambda ref: resolved.append(ref) or resolve_secret(ref))
    launch = resolve(
        [
            "--source=kafka://b:1/t",
            "--kafka_security_protocol=SASL_SSL",
            "--kafka_sasl_username=analytics",
            "--kafka_sasl_password=env:RA_TEST_SPEC_PASSWORD",
            f"--kafka_ssl_ca_cert={ca}",
            *SINKS,
        ]
    )
    assert reads == [str(ca)] and len(resolved) == 1
    assert launch.kafka_secrets == {"kafka_sasl_password": "the-secret-password"}
    assert "the-secret-password" not in repr(launch)  # the spec shows references only
    properties = dict(launch.source.kafka.client_properties)
    assert "${env:RA_TEST_SPEC_PASSWORD}" in properties["sasl.jaas.config"]
    assert launch.source.kafka is launch.dead_letter_sink.kafka or launch.dead_letter_sink.kafka is None


def test_the_spec_is_frozen():
    launch = resolve(["--source=in.jsonl", *SINKS])
    with pytest.raises(AttributeError):
        launch.streaming = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        launch.runner.engine = "x"  # type: ignore[misc]


def test_a_flink_job_gets_a_name_it_can_be_found_by_on_its_cluster():
    flink = ["--source=in.jsonl", "--runner=FlinkRunner", "--flink_master=127.0.0.1:8081", *SINKS]
    first, second = resolve(flink).runner.job_name, resolve(flink).runner.job_name
    assert first.startswith("realtime-analytics-") and first != second
    assert resolve([*flink, "--job_name=nightly"]).runner.job_name == "nightly"
    assert resolve(["--source=in.jsonl", *SINKS]).runner.job_name is None  # the direct runner needs none
