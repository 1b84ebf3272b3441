"""Leases (transforms/io/pubsub_leases.py): when a pulled message is acknowledged, released or extended.

The calls go to a recording client standing in for the subscription (the integration tests use the real emulator);
what is checked here is the bookkeeping: a mark is acknowledged only after a later mark's confirmation, a torn-down
owner's messages are redelivered, deadlines are extended before they expire, failures are retried.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
from google.api_core.exceptions import ServiceUnavailable

from transforms.io.pubsub_leases import ACK_IDS_PER_CALL, ORPHANED_AFTER, Leases, ThrottledLog


class Recorder:
    """Records Acknowledge and ModifyAckDeadline calls; fails the first ``failures[call]`` of each kind."""

    def __init__(self, **failures: int) -> None:
        self.acks: list[list[str]] = []
        self.modacks: list[tuple[list[str], int]] = []
        self.failures = dict(failures)
        self.lock = threading.Lock()

    def _maybe_fail(self, call: str) -> None:
        if self.failures.get(call, 0) > 0:
            self.failures[call] -= 1
            raise ServiceUnavailable(f"{call} injected failure")

    def acknowledge(self, ack_ids):
        with self.lock:
            self._maybe_fail("ack")
            self.acks.append(list(ack_ids))

    def modify_ack_deadline(self, ack_ids, seconds):
        with self.lock:
            self._maybe_fail("nack" if seconds == 0 else "renew")
            self.modacks.append((list(ack_ids), seconds))

    @property
    def acked(self) -> set[str]:
        with self.lock:
            return {i for call in self.acks for i in call}

    @property
    def nacked(self) -> set[str]:
        with self.lock:
            return {i for ids, seconds in self.modacks if seconds == 0 for i in ids}

    def renewed(self) -> list[tuple[list[str], int]]:
        with self.lock:
            return [(ids, s) for ids, s in self.modacks if s > 0]


def eventually(condition, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.fixture
def made():
    created: list[Leases] = []

    def make(client: Recorder, **kwargs) -> Leases:
        kwargs.setdefault("backoff_s", (0.05, 0.2))
        leases = Leases(client, "projects/p/subscriptions/s", **kwargs)
        created.append(leases)
        return leases

    yield make
    for leases in created:
        leases.close(flush_s=1)


def test_a_mark_is_acknowledged_only_once_a_later_mark_is_confirmed(made):
    client = Recorder()
    leases = made(client)
    leases.hold(1, ["a", "b"], 100, time.monotonic())
    first = leases.cut(1, 0)
    leases.confirm(first)
    time.sleep(0.2)
    assert client.acked == set()  # confirmed once: the runner may have committed less than this bundle
    assert leases.count() == 2
    leases.confirm(leases.cut(1, 0))  # an empty bundle, ended after the first confirmation
    assert eventually(lambda: client.acked == {"a", "b"})
    assert eventually(lambda: leases.count() == 0)


def test_marks_confirmed_together_wait_for_a_mark_cut_after_them(made):
    """Flink: one completed checkpoint finalizes every bundle that ended before it was notified, in one burst."""
    client = Recorder()
    leases = made(client)
    marks = []
    for owner, ids in ((1, ["a"]), (2, ["b"]), (3, ["c"])):
        leases.hold(owner, ids, 100, time.monotonic())
        marks.append(leases.cut(owner, 0))
    for mark in marks:
        leases.confirm(mark)
    time.sleep(0.2)
    assert client.acked == set()
    leases.hold(1, ["d"], 100, time.monotonic())
    later = leases.cut(1, 0)  # ended after the burst
    leases.confirm(later)  # the next checkpoint
    assert eventually(lambda: client.acked == {"a", "b", "c"})
    time.sleep(0.2)
    assert "d" not in client.acked and leases.count() == 1


def test_a_mark_cut_before_a_confirmation_does_not_acknowledge_it(made):
    client = Recorder()
    leases = made(client)
    leases.hold(1, ["a"], 100, time.monotonic())
    first = leases.cut(1, 0)
    early = leases.cut(2, 0)  # ended before `first` was confirmed
    leases.confirm(first)
    leases.confirm(early)
    time.sleep(0.2)
    assert client.acked == set()


def test_a_torn_down_owner_has_everything_it_holds_redelivered(made):
    client = Recorder()
    leases = made(client)
    leases.hold(1, ["a"], 100, time.monotonic())
    confirmed_once = leases.cut(1, 0)
    leases.confirm(confirmed_once)
    leases.hold(1, ["b"], 100, time.monotonic())
    unconfirmed = leases.cut(1, 0)
    leases.hold(1, ["c"], 100, time.monotonic())  # its current bundle
    leases.hold(2, ["z"], 100, time.monotonic())  # another owner's
    leases.release(1)
    assert eventually(lambda: client.nacked == {"a", "b", "c"})
    leases.confirm(unconfirmed)  # a finalization arriving late changes nothing
    leases.confirm(leases.cut(3, 0))
    time.sleep(0.2)
    assert client.acked == set() and leases.count() == 1  # owner 2's message is still held


def test_a_failed_bundle_redelivers_only_what_it_emitted(made):
    client = Recorder()
    leases = made(client)
    leases.hold(1, ["a"], 100, time.monotonic())
    committed = leases.cut(1, 0)
    leases.hold(1, ["b"], 100, time.monotonic())
    leases.release_in_flight(1)
    assert eventually(lambda: client.nacked == {"b"})
    leases.confirm(committed)
    leases.confirm(leases.cut(1, 0))
    assert eventually(lambda: client.acked == {"a"})


def test_totals_count_acknowledged_and_released_messages(made):
    """What the source reports as metrics: acknowledged once Pub/Sub accepted it; released when handed back."""
    client = Recorder(ack=1)  # the first Acknowledge fails and is retried: counted once, when it succeeds
    leases = made(client)
    leases.hold(1, ["a", "b"], 100, time.monotonic())
    leases.confirm(leases.cut(1, 0))
    leases.hold(1, ["c"], 100, time.monotonic())
    leases.release_in_flight(1)
    assert leases.totals() == (0, 1)  # released when decided
    leases.confirm(leases.cut(1, 0))
    assert eventually(lambda: leases.totals() == (2, 1))
    assert client.acked == {"a", "b"} and leases.count() == 0


def test_deadlines_are_extended_before_they_expire(made):
    client = Recorder()
    leases = made(client)
    leases.set_lease(30)
    # Pulled 25 s ago with the 30 s deadline: 5 s left, under the third of the lease that triggers an extension.
    leases.hold(1, ["a", "b"], 100, time.monotonic() - 25)
    leases.hold(1, ["c"], 100, time.monotonic())  # fresh: not yet
    assert eventually(lambda: client.renewed())
    time.sleep(0.2)
    assert client.renewed() == [(["a", "b"], 30)]


def test_a_failing_extension_is_retried_with_backoff(made, caplog):
    client = Recorder(renew=2)
    leases = made(client)
    leases.hold(1, ["a"], 100, time.monotonic() - 9)
    with caplog.at_level(logging.WARNING):
        assert eventually(lambda: client.renewed() == [(["a"], 10)])
    assert "extending the ack deadline of 1 messages failed (ServiceUnavailable" in caplog.text


def test_a_failing_acknowledgement_is_retried(made):
    client = Recorder(ack=3)
    leases = made(client)
    leases.hold(1, ["a"], 100, time.monotonic())
    leases.confirm(leases.cut(1, 0))
    leases.confirm(leases.cut(1, 0))
    assert eventually(lambda: client.acked == {"a"})
    assert leases.acknowledged == 1


def test_large_acknowledgements_are_split(made):
    client = Recorder()
    leases = made(client)
    ids = [f"m{i}" for i in range(ACK_IDS_PER_CALL * 2 + 5)]
    leases.hold(1, ids, 100, time.monotonic())
    leases.confirm(leases.cut(1, 0))
    leases.confirm(leases.cut(1, 0))
    assert eventually(lambda: len(client.acked) == len(ids))
    assert max(len(call) for call in client.acks) == ACK_IDS_PER_CALL


def test_a_message_held_too_long_is_released_with_a_warning(made, caplog):
    client = Recorder()
    leases = made(client, max_hold_s=0.3)
    with caplog.at_level(logging.WARNING):
        leases.hold(1, ["a"], 100, time.monotonic())
        leases.cut(1, 0)  # never finalized (a runner that does not finalize)
        assert eventually(lambda: client.nacked == {"a"})
    assert leases.count() == 0
    assert "without their bundle being finalized by the runner" in caplog.text


def test_the_watermark_bound_is_the_oldest_unconfirmed_publish_time(made):
    leases = made(Recorder())
    assert leases.oldest_unconfirmed_publish_us() is None
    leases.hold(1, ["a"], 300, time.monotonic())
    leases.hold(1, ["b"], 100, time.monotonic())
    first = leases.cut(1, 0)
    leases.hold(2, ["c"], 200, time.monotonic())
    assert leases.oldest_unconfirmed_publish_us() == 100
    leases.confirm(first)  # the runner committed it: no longer holds the watermark back
    assert leases.oldest_unconfirmed_publish_us() == 200


def test_close_releases_and_sends_what_is_queued(made):
    client = Recorder()
    leases = made(client)
    leases.hold(1, ["a"], 100, time.monotonic())
    leases.confirm(leases.cut(1, 0))
    leases.hold(1, ["b"], 100, time.monotonic())
    leases.confirm(leases.cut(1, 0))  # acknowledges "a"
    leases.close(flush_s=2)
    assert client.acked == {"a"} and client.nacked == {"b"}


def test_throttled_log_reports_once_per_interval_with_a_count(caplog):
    now = [0.0]
    log = ThrottledLog(logging.getLogger("throttled"), 60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        for _ in range(5):
            log.log(logging.WARNING, "k", "pull failed (%s)", "x")
        now[0] = 61
        log.log(logging.WARNING, "k", "pull failed (%s)", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "pull failed (x)",
        "pull failed (y) (and 4 more times since the last report)",
    ]


def test_marks_a_restarted_job_will_never_finalize_are_released(made):
    """Flink restarted from a checkpoint: the old tasks' bundles are never finalized, the new ones' are."""
    client = Recorder()
    leases = made(client)
    leases.hold(1, ["lost"], 100, time.monotonic())
    orphan = leases.cut(1, 0)
    leases.hold(9, ["other-lane"], 100, time.monotonic())
    other_lane = leases.cut(9, 1)
    for _ in range(ORPHANED_AFTER):  # the restarted job's bundles of lane 0, each confirmed
        leases.confirm(leases.cut(2, 0))
    time.sleep(0.2)
    assert client.nacked == set()
    leases.confirm(leases.cut(2, 0))
    assert eventually(lambda: client.nacked == {"lost"})
    leases.confirm(orphan)  # too late: already redelivered
    time.sleep(0.2)
    assert "lost" not in client.acked and not other_lane.settled
