"""Offline Dataflow translation check: the flex template's launch path builds a graph Dataflow can run.

``--dry_run=True`` makes DataflowRunner translate the pipeline into the proto it would submit and return before
any API call: no credentials, no network (a socket guard proves it), about a second per graph. What it cannot
show is whether the service accepts the job (quotas, permissions, the worker image); docs/flex-template.md.

Sources (see also docs/flex-template.md):
- batch, JSON lines: a local glob. A ``gs://`` glob would be matched against GCS while the graph is built
  (``ReadFromTextWithFilename`` validates its pattern), which offline means a 120 s timeout. Same graph either way;
- batch, Avro on ``gs://``: ``fileio.MatchFiles`` matches at run time, so the real GCS glob builds offline;
- streaming, Pub/Sub: Dataflow's native source (``beam:transform:pubsub_read:v1``);
- streaming, synthetic (not replay): ``PeriodicImpulse``, a splittable DoFn.
"""

from __future__ import annotations

import socket
import time

import pytest
from apache_beam.portability import common_urns, python_urns
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines import flex_template
from pipelines.options import ConfigError

pytestmark = pytest.mark.timeout(120)

DRY_RUN = [
    "--runner=DataflowRunner",
    "--dry_run=True",
    "--project=my-project",  # Beam validates the id: "p" is refused as "Invalid Project ID"
    "--region=us-central1",
    "--temp_location=gs://my-bucket/tmp",  # a valid bucket name: an invalid one makes Beam try to create a bucket
]
IMAGE = "us-central1-docker.pkg.dev/my-project/dataflow/realtime-analytics:test"
MAX_SECONDS = 20

# What Dataflow (Runner v2) executes, in Beam's standard URNs. Leaves (transforms without subtransforms) must be
# primitives Dataflow runs; Pub/Sub reads and writes are Dataflow-native (the Python SDK emits these URNs only for
# Dataflow; other runners get Python DoFns). Composites are either replaced by Dataflow (combine, reshuffle) or
# run through their subtransforms. Left out on purpose: TestStream (Beam's own suites skip it on Dataflow, "TestStream
# is not supported on TestDataflowRunner"), the runner-internal map/merge windows and to_string, and the deprecated
# create_view.
DATAFLOW_LEAVES = {
    common_urns.primitives.IMPULSE.urn,
    common_urns.primitives.PAR_DO.urn,
    common_urns.primitives.GROUP_BY_KEY.urn,
    common_urns.primitives.FLATTEN.urn,
    common_urns.primitives.ASSIGN_WINDOWS.urn,
    common_urns.composites.PUBSUB_READ.urn,
    common_urns.composites.PUBSUB_WRITE.urn,
    common_urns.composites.PUBSUB_WRITE_V2.urn,
}
DATAFLOW_COMPOSITES = {
    common_urns.composites.COMBINE_PER_KEY.urn,
    common_urns.composites.COMBINE_GLOBALLY.urn,
    common_urns.combine_components.COMBINE_GROUPED_VALUES.urn,
    common_urns.composites.RESHUFFLE.urn,
    common_urns.composites.GROUP_INTO_BATCHES_WITH_SHARDED_KEY.urn,
    common_urns.group_into_batches_components.GROUP_INTO_BATCHES.urn,  # runs as its stateful ParDo
    common_urns.deprecated_primitives.READ.urn,  # only as the composite around the SDF read (checked below)
    python_urns.GENERIC_COMPOSITE_TRANSFORM,
    python_urns.PICKLED_TRANSFORM,
    # Beam's WriteToBigQuery names its composite so the SDK can rebuild it from the proto (bigquery.py,
    # register_urn); no runner replaces it, Dataflow runs its leaves (checked like every other leaf).
    "beam:transform:write_to_big_query:v0",
}
DATAFLOW_REQUIREMENTS = {
    common_urns.requirements.REQUIRES_STATEFUL_PROCESSING.urn,
    common_urns.requirements.REQUIRES_SPLITTABLE_DOFN.urn,
    common_urns.requirements.REQUIRES_STABLE_INPUT.urn,
    common_urns.requirements.REQUIRES_BUNDLE_FINALIZATION.urn,
}
TEST_STREAM = common_urns.primitives.TEST_STREAM.urn

COMMON_LABELS = [
    "ReadRecords",
    "StreamingAnalytics/ParseEvents",
    "StreamingAnalytics/ValidateEvents",
    "StreamingAnalytics/DeduplicateEvents",
    "StreamingAnalytics/WindowEvents",
    "StreamingAnalytics/WindowedAggregates",
    "WriteAggregates",
    "WriteDeadLetters",
]


@pytest.fixture
def offline(monkeypatch):
    """No credentials, no metadata server, and any IP connection or DNS lookup fails at once and is recorded."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "my-project")
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # google-auth: never probe the GCE metadata server
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    attempts: list[str] = []
    real_connect = socket.socket.connect

    def connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(f"connect {address}")
            raise OSError("network disabled in this test")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        attempts.append(f"resolve {host}")
        raise socket.gaierror("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert attempts == [], f"the dry run touched the network: {attempts}"


def dry_run(*args: str):
    """The proto DataflowRunner would submit, built through the flex template launcher; asserts it was fast."""
    started = time.perf_counter()
    result = flex_template.run([*DRY_RUN, f"--sdk_container_image={IMAGE}", *args])
    seconds = time.perf_counter() - started
    assert seconds < MAX_SECONDS, f"dry run took {seconds:.1f} s"
    return result.job.proto_pipeline


def dataflow_problems(proto) -> list[str]:
    """Everything in ``proto`` Dataflow cannot run."""
    problems = []
    transforms = proto.components.transforms
    for tid, t in transforms.items():
        urn, name = t.spec.urn, t.unique_name or tid
        if urn == TEST_STREAM:
            problems.append(f"{name}: TestStream ({urn}) runs on the direct runner only")
        elif t.subtransforms:
            if urn and urn not in DATAFLOW_COMPOSITES | DATAFLOW_LEAVES:
                problems.append(f"{name}: unknown composite URN {urn}")
        elif urn not in DATAFLOW_LEAVES:
            passthrough = set(t.outputs.values()) <= set(t.inputs.values())  # e.g. Create's MaybeReshuffle
            if not passthrough:
                problems.append(f"{name}: leaf transform with URN {urn!r}, which Dataflow does not execute")
    for requirement in proto.requirements:
        if requirement not in DATAFLOW_REQUIREMENTS:
            problems.append(f"pipeline requires {requirement}")
    for env_id, env in proto.components.environments.items():
        if env.urn != common_urns.environments.DOCKER.urn:
            problems.append(f"environment {env_id} is {env.urn}; Dataflow runs Docker environments only")
    return problems


def urns(proto) -> set[str]:
    return {t.spec.urn for t in proto.components.transforms.values() if t.spec.urn}


def labels(proto) -> set[str]:
    return {t.unique_name for t in proto.components.transforms.values()}


def assert_runs_on_dataflow(proto, streaming: bool):
    assert dataflow_problems(proto) == []
    assert TEST_STREAM not in urns(proto)
    present = labels(proto)
    for label in COMMON_LABELS:
        assert label in present
    assert ("StreamingAnalytics/FilterTooLate" in present) is streaming
    unbounded = [
        p for p in proto.components.pcollections.values() if p.is_bounded == beam_runner_api_pb2.IsBounded.UNBOUNDED
    ]
    assert bool(unbounded) is streaming
    images = {env.payload for env in proto.components.environments.values()}
    assert all(IMAGE.encode() in payload for payload in images), "workers must run the template image"


def test_batch_json_lines(offline, tmp_path):
    (tmp_path / "events-1.jsonl").write_bytes(b"")
    proto = dry_run(f"--source={tmp_path}/*.jsonl")
    assert_runs_on_dataflow(proto, streaming=False)
    # Bounded files are read in byte ranges by plain DoFns (docs/benchmarks.md); a legacy Read, if any comes back,
    # must arrive as the SDF wrapper, not as a primitive.
    legacy = common_urns.deprecated_primitives.READ.urn
    reads = [t for t in proto.components.transforms.values() if t.spec.urn == legacy]
    assert all(read.subtransforms for read in reads), "the legacy Read must arrive as the SDF wrapper"


def test_batch_avro_on_gcs(offline):
    proto = dry_run("--format=avro", "--source=gs://my-bucket/in/*.avro", "--window=sliding", "--window_period=30")
    assert_runs_on_dataflow(proto, streaming=False)


def test_streaming_pubsub(offline):
    proto = dry_run(
        "--streaming",
        "--source=pubsub://projects/my-project/subscriptions/events",
        "--dead_letter_sink=pubsub://projects/my-project/topics/dead-letters",
    )
    assert_runs_on_dataflow(proto, streaming=True)
    leaves = {t.unique_name: t.spec.urn for t in proto.components.transforms.values() if not t.subtransforms}
    assert common_urns.composites.PUBSUB_READ.urn in leaves.values(), "Dataflow's native Pub/Sub source"
    assert common_urns.composites.PUBSUB_WRITE.urn in leaves.values(), "Dataflow's native Pub/Sub sink"
    assert common_urns.requirements.REQUIRES_STATEFUL_PROCESSING.urn in proto.requirements  # streaming dedup


def test_streaming_pubsub_into_bigquery_with_the_storage_write_api(offline):
    """The pure-Python Storage Write sink: a GroupIntoBatches and a stateful ParDo per table, no Java transform."""
    proto = dry_run(
        "--streaming",
        "--source=pubsub://projects/my-project/subscriptions/events",
        "--sink=bigquery://my-project.analytics.aggregates",
        "--dead_letter_sink=bigquery://my-project.analytics.dead_letter",
        "--bigquery_write_method=STORAGE_WRITE_API",
    )
    assert_runs_on_dataflow(proto, streaming=True)
    present = labels(proto)
    for table in ("WriteAggregates", "WriteDeadLetters"):
        assert f"{table}/BigQuery/StorageWrite/Batch" in present
        assert f"{table}/BigQuery/StorageWrite/Append" in present
    assert "WithRefusedAggregates" in present and "LogLostDeadLetters" in present


def test_streaming_pubsub_into_bigquery_with_streaming_inserts(offline):
    """The default write method: Beam's WriteToBigQuery (insertAll), its refused rows back as write dead letters."""
    proto = dry_run(
        "--streaming",
        "--source=pubsub://projects/my-project/subscriptions/events",
        "--sink=bigquery://my-project.analytics.aggregates",
        "--dead_letter_sink=bigquery://my-project.analytics.dead_letter",
    )
    assert_runs_on_dataflow(proto, streaming=True)
    present = labels(proto)
    for table in ("WriteAggregates", "WriteDeadLetters"):
        assert f"{table}/BigQuery/ToInsertRow" in present
        assert any(label.startswith(f"{table}/BigQuery/Write/") for label in present)
        assert not any("StorageWrite" in label for label in present)
    assert "WithRefusedAggregates" in present and "LogLostDeadLetters" in present


def test_streaming_synthetic(offline):
    proto = dry_run("--streaming", "--source=synthetic://?rate=50&keys=10&users=100", "--window=session")
    assert_runs_on_dataflow(proto, streaming=True)
    assert common_urns.requirements.REQUIRES_SPLITTABLE_DOFN.urn in proto.requirements  # PeriodicImpulse


def test_the_launcher_refuses_a_replay_source(offline):
    with pytest.raises(ConfigError, match="TestStream"):
        flex_template.launch_spec([*DRY_RUN])  # the default source: the embedded demo, a replay


def test_the_check_catches_what_dataflow_cannot_run(offline):
    """Not vacuous: the demo replay built for Dataflow (bypassing the launcher's refusal) is flagged."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.options import DEMO_SOURCE
    from transforms.analytics import AnalyticsConfig, StreamingAnalytics
    from transforms.io import ReadRecords

    options = PipelineOptions([*DRY_RUN, "--streaming"])
    pipeline = beam.Pipeline(options=options)
    # build_pipeline refuses a replay source for Dataflow, so compose the same graph by hand.
    _ = pipeline | ReadRecords(DEMO_SOURCE, "json", True) | StreamingAnalytics(AnalyticsConfig(streaming=True))
    proto = pipeline.run().job.proto_pipeline
    problems = dataflow_problems(proto)
    assert any("TestStream" in p for p in problems), problems
