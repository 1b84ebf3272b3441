"""The pull source's pieces that need no service: which runners get it, its lanes, its watermark frontier, the
temporary subscription's name. Reading from the real emulator is tests/integration/test_pubsub_pull.py."""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.runners.direct.direct_runner import BundleBasedDirectRunner, SwitchingDirectRunner
from apache_beam.runners.portability.flink_runner import FlinkRunner
from apache_beam.runners.portability.prism_runner import PrismRunner

from pipelines.runners import beam_options
from pipelines.spec import resolve
from transforms.io.pubsub import ReadPubSubRecords, has_native_pubsub_read, parse_pubsub_uri
from transforms.io.pubsub_pull import PullSettings, PullSpec, _LaneClock, _Lanes, _LaneTracker, temporary_subscription


def test_dataflow_and_the_direct_runner_keep_beams_read():
    from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
    from apache_beam.runners.dataflow.test_dataflow_runner import TestDataflowRunner

    for runner in (DataflowRunner(), TestDataflowRunner(), BundleBasedDirectRunner(), SwitchingDirectRunner()):
        assert has_native_pubsub_read(runner), runner
    for runner in (PrismRunner(), FlinkRunner()):
        assert not has_native_pubsub_read(runner), runner


def _labels(pipeline: beam.Pipeline) -> set[str]:
    labels: set[str] = set()

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            labels.add(node.full_label)

        def visit_transform(self, node):
            labels.add(node.full_label)

    pipeline.visit(Visitor())
    return labels


@pytest.mark.parametrize(("runner", "read"), [(PrismRunner, "Read/Pull"), (BundleBasedDirectRunner, "Read/Read")])
def test_the_read_depends_on_the_runner_only_in_its_inner_steps(runner, read):
    pipeline = beam.Pipeline(runner=runner())
    pipeline | "PubSub" >> ReadPubSubRecords("pubsub://projects/my-project/subscriptions/events")
    labels = _labels(pipeline)
    assert {"PubSub/Read", "PubSub/ToRecord", f"PubSub/{read}"} <= labels


@pytest.mark.parametrize("name", ["events", "e" * 255, "a.b~c%d+e_f-g"])
def test_the_temporary_subscription_has_a_valid_name(name):
    path = temporary_subscription(f"projects/my-project/topics/{name}", "0123456789abcdef0123456789abcdef")
    parsed = parse_pubsub_uri(f"pubsub://{path}")
    assert parsed.kind == "subscriptions" and parsed.project == "my-project"
    assert parsed.name.startswith(name[:200]) and parsed.name.endswith("-pull-0123456789ab")


def test_a_lane_claims_until_it_checkpoints_and_resumes_as_itself():
    tracker = _LaneTracker((2, False))
    assert tracker.try_claim(0) and tracker.try_claim(1)
    assert tracker.try_split(0.5) is None  # no dynamic splits: a lane has no positions
    with pytest.raises(ValueError, match="without a checkpoint"):
        tracker.check_done()
    assert tracker.try_split(0) == ((2, True), (2, False))
    assert not tracker.try_claim(2)
    tracker.check_done()
    assert tracker.try_split(0) is None
    assert not tracker.is_bounded()


def test_the_initial_restriction_splits_into_the_configured_lanes():
    lanes = _Lanes()
    spec = PullSpec("projects/p/subscriptions/s", None, "job", PullSettings(readers=3))
    assert list(lanes.split(spec, lanes.initial_restriction(spec))) == [(0, False), (1, False), (2, False)]
    assert list(lanes.split(spec, (1, True))) == [(1, True)]
    assert lanes.truncate(spec, (0, False)) is None  # drained: stop pulling


def test_the_frontier_follows_recent_pulls_and_advances_when_idle():
    clock = _LaneClock()
    assert clock.frontier_us(now=0.0, sample_s=10) is None  # nothing pulled yet: no claim
    clock.saw(0.0, 5_000)
    clock.saw(4.0, 3_000)  # out of order: an older message came later
    assert clock.frontier_us(now=5.0, sample_s=10) == 3_000
    assert clock.frontier_us(now=12.0, sample_s=10) == 3_000  # the first response aged out of the sample
    assert clock.frontier_us(now=15.0, sample_s=10) is None  # the sample aged out: no claim either
    clock.saw_nothing(pull_started_us=1_000_000_000, lag_us=2_000_000)  # an empty pull: nothing older is waiting
    assert clock.frontier_us(now=16.0, sample_s=10) == 998_000_000
    clock.saw(17.0, 999_500_000)
    assert clock.frontier_us(now=17.5, sample_s=10) == 999_500_000


def test_prism_and_flink_with_checkpoints_read_pubsub_and_flink_finishes_bundles_before_a_checkpoint():
    source = "--source=pubsub://projects/my-project/subscriptions/events"
    assert resolve([source, "--runner=PrismRunner"]).runner.reads_pubsub
    flink = resolve(
        [source, "--runner=FlinkRunner", "--checkpointing_interval=1000", "--flink_job_server_jar=/job-server.jar"]
    ).runner
    assert flink.reads_pubsub
    # The job server gets it as finishBundleBeforeCheckpointing (a declared option: Beam sends declared options only).
    assert beam_options(flink, ("--runner=FlinkRunner",)).get_all_options()["finish_bundle_before_checkpointing"]
