"""An unbounded Pub/Sub source for every Fn API runner (Prism, Flink): synchronous pull in a splittable DoFn,
acknowledgement through bundle finalization.

Beam's ``ReadFromPubSub`` expands to ``beam:transform:pubsub_read:v1``, which only Dataflow implements (the direct
runner substitutes its own reader). ``PullFromPubSub`` is plain Beam Python instead:

- a splittable DoFn whose restriction is one of ``readers`` endless *lanes*; each bundle pulls (``Pull``, at most
  ``max_messages_per_pull`` per call) and emits whole responses for about ``bundle_seconds``, then self-checkpoints
  (``defer_remainder``): at once while messages flow, after ``idle_resume_seconds`` when a pull came back empty;
- every message is a Beam ``PubsubMessage`` (data, attributes, message_id, publish_time) timestamped by its publish
  time, exactly what Beam's own read gives;
- acknowledgement only after the runner has committed the bundle, through the bundle finalizer, with ack deadlines
  extended until then (``transforms/io/pubsub_leases.py``). Delivery is at-least-once; the pipeline's ``event_id``
  dedup makes the counts exact;
- the watermark is the publish time of the oldest message whose bundle the runner has not yet committed, bounded by
  what recent pulls saw (the oldest publish time of the last ``watermark_sample_seconds`` of responses) and, when a
  pull comes back empty, advancing to the time that pull started less ``idle_watermark_lag_seconds``;
- bounded memory: no more pulls while ``max_held_messages`` messages are held; errors are retried with backoff and
  logged at most once per ``log_interval_seconds`` each.

``pubsub://projects/P/topics/T`` reads through a subscription of the job's own, ``<topic>-pull-<job id>``, created by
the first reader with a 24 h expiration policy (Pub/Sub deletes it a day after the job stops using it).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.io.iobase import RestrictionProgress, RestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms import metrics
from transforms.io.pubsub_leases import AckClient, Leases, ThrottledLog, rpc_errors

_LOG = logging.getLogger(__name__)

TEMPORARY_SUBSCRIPTION_TTL_S = 24 * 3600  # Pub/Sub's minimum expiration policy


@dataclass(frozen=True)
class PullSettings:
    """How the pull source reads; the defaults suit a production subscription."""

    readers: int = 1  # lanes pulling in parallel (each a restriction the runner may run on another worker)
    max_messages_per_pull: int = 1000  # Pub/Sub's maximum per Pull call
    max_held_messages: int = 100_000  # pulled and not yet acknowledged, per subscription and worker process
    bundle_seconds: float = 1.0  # a bundle ends after the pull response that crosses this
    max_bundle_messages: int = 10_000
    idle_resume_seconds: int = 1  # whole seconds (Flink's runner drops fractions of a resume delay)
    pull_timeout_seconds: float = 2.0  # an empty subscription answers within this (DeadlineExceeded = empty)
    rpc_timeout_seconds: float = 30.0
    max_hold_seconds: float = 1800.0
    # No bundle on any lane for this long: the job is gone (cancelled, failed over, its worker kept alive by a
    # launcher that hosts workers in-process); release what its readers hold so that Pub/Sub redelivers it.
    abandon_after_seconds: float = 60.0
    idle_watermark_lag_seconds: float = 2.0
    watermark_sample_seconds: float = 10.0
    log_interval_seconds: float = 60.0
    backoff_seconds: tuple[float, float] = (0.5, 30.0)


@dataclass(frozen=True)
class PullSpec:
    """One read: the element of the splittable DoFn (so restrictions and workers know what to read)."""

    subscription: str  # projects/P/subscriptions/S
    topic: str | None  # set when ``subscription`` is the job's temporary subscription on this topic
    job: str  # unique per constructed pipeline: readers of one job share their leases, other jobs never do
    settings: PullSettings = field(default_factory=PullSettings)


def temporary_subscription(topic: str, job: str) -> str:
    """``projects/P/topics/T`` -> ``projects/P/subscriptions/T-pull-<job[:12]>`` (a valid name: 3-255 characters,
    starting with the topic's letter)."""
    _, project, _, name = topic.split("/")
    return f"projects/{project}/subscriptions/{name[:230]}-pull-{job[:12]}"


# -- one subscription, shared by the DoFn instances of one job in this worker process ---------------------------


class _LaneClock:
    """What one lane's recent pulls say about the publish times still to come."""

    def __init__(self) -> None:
        self.recent: deque[tuple[float, int]] = deque()  # (monotonic time, oldest publish time µs of a response)
        self.idle_frontier_us: int | None = None

    def saw(self, at: float, oldest_publish_us: int) -> None:
        self.idle_frontier_us = None
        self.recent.append((at, oldest_publish_us))

    def saw_nothing(self, pull_started_us: int, lag_us: int) -> None:
        self.recent.clear()
        self.idle_frontier_us = pull_started_us - lag_us

    def frontier_us(self, now: float, sample_s: float) -> int | None:
        if self.idle_frontier_us is not None:
            return self.idle_frontier_us
        while self.recent and now - self.recent[0][0] > sample_s:
            self.recent.popleft()
        return min((oldest for _, oldest in self.recent), default=None)


class SubscriptionReader:
    """Pulls one subscription for one job in this process; holds the pulled messages in ``leases``."""

    def __init__(self, spec: PullSpec) -> None:
        from google.cloud import pubsub_v1

        self.spec = spec
        self.owners: set[int] = set()
        self.closed = False
        settings = spec.settings
        self._settings = settings
        # Honours PUBSUB_EMULATOR_HOST (plain-text gRPC, anonymous) like Beam's own Pub/Sub clients.
        self._client = pubsub_v1.SubscriberClient()
        self.leases = Leases(
            AckClient(self._client, spec.subscription, settings.rpc_timeout_seconds),
            spec.subscription,
            max_hold_s=settings.max_hold_seconds,
            backoff_s=settings.backoff_seconds,
            log_interval_s=settings.log_interval_seconds,
        )
        self._log = ThrottledLog(_LOG, settings.log_interval_seconds)
        self._lock = threading.Lock()
        self._lanes: dict[int, _LaneClock] = {}
        self._ready = False
        self._failures = 0
        self._retry_at = 0.0
        self._bundles = 0  # running now
        self._reported = (0, 0)  # (acknowledged, released) already reported as metrics
        self._last_bundle = time.monotonic()  # when one last started or ended

    def bundle(self, delta: int) -> None:
        """A bundle started (+1) or ended (-1)."""
        with self._lock:
            self._bundles += delta
            self._last_bundle = time.monotonic()

    def abandoned(self) -> bool:
        with self._lock:
            idle_s = time.monotonic() - self._last_bundle
            return self._bundles == 0 and idle_s > self._settings.abandon_after_seconds

    # -- start-up: the subscription and its ack deadline --------------------------------------------------------

    def _prepare(self) -> bool:
        """Creates the job's temporary subscription (a topic source) and reads the subscription's ack deadline. Only
        a failure to create is fatal for now (retried); a deadline that cannot be read (a subscriber may lack
        ``pubsub.subscriptions.get``) leaves the 10 s minimum, which only extends more often."""
        from google.api_core.exceptions import AlreadyExists, NotFound

        spec = self.spec
        timeout = self._settings.rpc_timeout_seconds
        if spec.topic is not None:
            try:
                self._client.create_subscription(
                    request={
                        "name": spec.subscription,
                        "topic": spec.topic,
                        "expiration_policy": {"ttl": {"seconds": TEMPORARY_SUBSCRIPTION_TTL_S}},
                    },
                    timeout=timeout,
                    retry=None,
                )
                _LOG.info("Pub/Sub: created subscription %s on %s for this job", spec.subscription, spec.topic)
            except AlreadyExists:
                pass
            except rpc_errors() as exc:
                self._failed("prepare", f"creating the subscription on {spec.topic}", exc)
                return False
        try:
            subscription = self._client.get_subscription(
                request={"subscription": spec.subscription}, timeout=timeout, retry=None
            )
        except NotFound as exc:
            self._failed("prepare", "looking up the subscription", exc)
            return False
        except rpc_errors() as exc:
            self._log.log(
                logging.WARNING,
                "deadline",
                "Pub/Sub %s: its ack deadline cannot be read (%s: %s); deadlines are extended by %d s",
                spec.subscription,
                type(exc).__name__,
                _first_line(exc),
                self.leases.lease_s,
            )
        else:
            self.leases.set_lease(subscription.ack_deadline_seconds)
        self._ready = True
        return True

    # -- pulling ------------------------------------------------------------------------------------------------

    def wait_s(self) -> float:
        """Seconds to wait before the next pull (0: pull now). Raises if acknowledgements can no longer be sent."""
        if self.leases.failure is not None:
            raise RuntimeError(f"the Pub/Sub lease thread of {self.spec.subscription} failed") from self.leases.failure
        now = time.monotonic()
        if now < self._retry_at:
            return self._retry_at - now
        if not self._ready and not self._prepare():
            return max(self._retry_at - time.monotonic(), 0.001)
        held = self.leases.count()
        if held >= self._settings.max_held_messages:
            self._log.log(
                logging.WARNING,
                "full",
                "Pub/Sub %s: %d messages wait for the runner to commit the bundles that read them "
                "(max_held_messages); reading pauses until they are acknowledged",
                self.spec.subscription,
                held,
            )
            return float(self._settings.idle_resume_seconds)
        return 0.0

    def unreported(self) -> tuple[int, int]:
        """(acknowledged, released) since the last call: what a bundle adds to the counters. Acknowledgements happen
        on the lease thread, outside any bundle, where Beam has no metrics container to count them in."""
        totals = self.leases.totals()
        with self._lock:
            before, self._reported = self._reported, totals
        return totals[0] - before[0], totals[1] - before[1]

    def backoff_s(self) -> float:
        return max(0.0, self._retry_at - time.monotonic())

    def room(self) -> int:
        return max(0, self._settings.max_held_messages - self.leases.count())

    def pull(self, owner: int, lane: int, max_messages: int) -> list[TimestampedValue]:
        """One Pull call: the messages as timestamped ``PubsubMessage``s, held by ``owner`` (empty on no message or
        on an error, which sets the backoff)."""
        from google.api_core.exceptions import DeadlineExceeded, NotFound

        settings = self._settings
        started = time.monotonic()
        started_us = time.time_ns() // 1000
        try:
            response = self._client.pull(
                request={"subscription": self.spec.subscription, "max_messages": max_messages},
                timeout=settings.pull_timeout_seconds,
                retry=None,
            )
            received = response.received_messages
        except DeadlineExceeded:
            received = []
        except NotFound as exc:
            self._ready = False  # created again (temporary subscription) or looked up again on the next try
            self._failed("pull", "pulling", exc)
            return []
        except rpc_errors() as exc:
            self._failed("pull", "pulling", exc)
            return []
        self._failures = 0
        clock = self._lane(lane)
        if not received:
            with self._lock:
                clock.saw_nothing(started_us, int(settings.idle_watermark_lag_seconds * 1_000_000))
            return []
        out = []
        ack_ids = []
        oldest_us = None
        for item in received:
            message = item.message
            publish_time = message.publish_time
            if publish_time is None:  # Pub/Sub always sets it; never drop a message that lacks it
                self._log.log(
                    logging.WARNING,
                    "no-publish-time",
                    "Pub/Sub message %s has no publish time; timestamped by its pull time",
                    message.message_id,
                )
                timestamp = Timestamp(micros=started_us)
            else:
                timestamp = Timestamp.from_utc_datetime(publish_time)
            micros = timestamp.micros
            oldest_us = micros if oldest_us is None else min(oldest_us, micros)
            value = PubsubMessage(
                message.data, dict(message.attributes), message.message_id, publish_time, message.ordering_key
            )
            out.append(TimestampedValue(value, timestamp))
            ack_ids.append(item.ack_id)
        self.leases.hold(owner, ack_ids, oldest_us, started)
        with self._lock:
            clock.saw(time.monotonic(), oldest_us)
        return out

    def watermark_us(self, lane: int) -> int | None:
        """Lower bound on the publish times this lane emits from now on (None: nothing known yet)."""
        with self._lock:
            frontier = self._lane(lane).frontier_us(time.monotonic(), self._settings.watermark_sample_seconds)
        if frontier is None:
            return None
        unconfirmed = self.leases.oldest_unconfirmed_publish_us()
        return frontier if unconfirmed is None else min(frontier, unconfirmed)

    def close(self) -> None:
        self.leases.close()
        self._client.close()

    def _lane(self, lane: int) -> _LaneClock:
        clock = self._lanes.get(lane)
        if clock is None:
            clock = self._lanes[lane] = _LaneClock()
        return clock

    def _failed(self, key: str, what: str, exc: BaseException) -> None:
        self._failures += 1
        first, cap = self._settings.backoff_seconds
        delay = min(cap, first * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
        self._log.log(
            logging.WARNING,
            key,
            "Pub/Sub %s: %s failed (%s: %s); retrying in %.1f s",
            self.spec.subscription,
            what,
            type(exc).__name__,
            _first_line(exc),
            delay,
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""


_READERS: dict[tuple[str, str], SubscriptionReader] = {}
_READERS_LOCK = threading.Lock()
_OWNER_IDS = itertools.count(1)
_WATCHDOG_S = 5.0
_watchdog: threading.Thread | None = None


def _attach(spec: PullSpec, owner: int) -> SubscriptionReader:
    global _watchdog
    key = (spec.job, spec.subscription)
    with _READERS_LOCK:
        reader = _READERS.get(key)
        if reader is None:
            reader = _READERS[key] = SubscriptionReader(spec)
        reader.owners.add(owner)
        if _watchdog is None or not _watchdog.is_alive():
            _watchdog = threading.Thread(target=_close_abandoned_readers, name="pubsub-readers-watchdog", daemon=True)
            _watchdog.start()
        return reader


def _close_abandoned_readers() -> None:
    """Runs while readers exist: closes those whose job stopped running bundles (DoFn teardown is not guaranteed:
    Flink's embedded runner, for one, keeps a cancelled job's in-process workers alive)."""
    while True:
        time.sleep(_WATCHDOG_S)
        with _READERS_LOCK:
            gone = [reader for reader in _READERS.values() if reader.abandoned()]
            for reader in gone:
                reader.closed = True
                del _READERS[(reader.spec.job, reader.spec.subscription)]
            if not _READERS and not gone:
                return
        for reader in gone:
            held = reader.leases.count()
            _LOG.info(
                "Pub/Sub %s: no bundle for %.0f s, the job is gone; releasing its %d held messages for redelivery",
                reader.spec.subscription,
                reader.spec.settings.abandon_after_seconds,
                held,
            )
            reader.close()


def _detach(reader: SubscriptionReader, owner: int) -> None:
    """``owner`` (a DoFn instance) is torn down: release what it holds; the last one out closes the reader."""
    reader.leases.release(owner)
    with _READERS_LOCK:
        reader.owners.discard(owner)
        last = not reader.owners and not reader.closed
        if last:
            reader.closed = True
            _READERS.pop((reader.spec.job, reader.spec.subscription), None)
    if last:
        reader.close()


# -- the splittable DoFn ------------------------------------------------------------------------------------------

# A restriction is one lane, (index, stopped): "stopped" is the part a bundle read before it self-checkpointed.
Lane = tuple[int, bool]


class _LaneTracker(RestrictionTracker):
    """An endless lane: every claim succeeds until the bundle checkpoints; the residual is the same lane again."""

    def __init__(self, lane: Lane) -> None:
        self._lane = lane

    def current_restriction(self) -> Lane:
        return self._lane

    def try_claim(self, position: Any) -> bool:
        return not self._lane[1]

    def try_split(self, fraction_of_remainder: float) -> tuple[Lane, Lane] | None:
        # Only self-checkpoints: a lane has no positions to split at (Pub/Sub balances lanes by itself).
        if fraction_of_remainder != 0 or self._lane[1]:
            return None
        primary, residual = (self._lane[0], True), (self._lane[0], False)
        self._lane = primary
        return primary, residual

    def check_done(self) -> None:
        if not self._lane[1]:
            raise ValueError(f"Pub/Sub lane {self._lane[0]} ended its bundle without a checkpoint")

    def current_progress(self) -> RestrictionProgress:
        return RestrictionProgress(completed=0.0, remaining=1.0)

    def is_bounded(self) -> bool:
        return False


class _Lanes(RestrictionProvider):
    def initial_restriction(self, element: PullSpec) -> Lane:
        return (0, False)

    def split(self, element: PullSpec, restriction: Lane):
        if restriction[1]:
            yield restriction
            return
        for index in range(max(1, element.settings.readers)):
            yield (index, False)

    def create_tracker(self, restriction: Lane) -> _LaneTracker:
        return _LaneTracker(restriction)

    def restriction_size(self, element: PullSpec, restriction: Lane) -> float:
        return 1.0

    def truncate(self, element: PullSpec, restriction: Lane) -> None:
        return None  # draining: stop pulling; what is held is released and redelivered


def _advance(estimator: ManualWatermarkEstimator, micros: int | None) -> None:
    if micros is None:
        return
    current = estimator.current_watermark()
    candidate = Timestamp(micros=micros)
    if current is None or candidate > current:
        estimator.set_watermark(candidate)


class _PullFn(beam.DoFn):
    """Pulls the lane it is given; acknowledges through the bundle finalizer (see the module docstring)."""

    def setup(self) -> None:
        self._owner = next(_OWNER_IDS)
        self._reader: SubscriptionReader | None = None
        self._pulled = metrics.counter(metrics.PUBSUB_MESSAGES_PULLED)
        self._acknowledged = metrics.counter(metrics.PUBSUB_MESSAGES_ACKNOWLEDGED)
        self._released = metrics.counter(metrics.PUBSUB_MESSAGES_RELEASED)
        self._outstanding = metrics.gauge(metrics.PUBSUB_MESSAGES_OUTSTANDING)

    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        spec: PullSpec,
        bundle_finalizer=beam.DoFn.BundleFinalizerParam,
        tracker=beam.DoFn.RestrictionParam(_Lanes()),
        watermark_estimator=beam.DoFn.WatermarkEstimatorParam(ManualWatermarkEstimator.default_provider()),
    ):
        if self._reader is None or self._reader.closed:
            self._reader = _attach(spec, self._owner)
        reader, settings = self._reader, spec.settings
        lane = tracker.current_restriction()[0]
        started = time.monotonic()
        emitted = 0
        resume_s: float = settings.idle_resume_seconds
        reader.bundle(+1)
        try:
            while tracker.try_claim(emitted):
                wait = reader.wait_s()
                if wait > 0:
                    resume_s = max(1, math.ceil(wait))
                    break
                batch = reader.pull(self._owner, lane, min(settings.max_messages_per_pull, reader.room()))
                if not batch:  # nothing there, or the call failed (then it backs off)
                    resume_s = max(settings.idle_resume_seconds, math.ceil(reader.backoff_s()))
                    break
                yield from batch
                emitted += len(batch)
                if emitted >= settings.max_bundle_messages or time.monotonic() - started >= settings.bundle_seconds:
                    resume_s = 0
                    break
        except BaseException:
            # A failed bundle (or one the runner abandons) is never committed: redeliver what it emitted.
            reader.leases.release_in_flight(self._owner)
            raise
        finally:
            reader.bundle(-1)
        self._report(reader, emitted)
        _advance(watermark_estimator, reader.watermark_us(lane))
        tracker.defer_remainder(Duration(seconds=resume_s))
        # Every bundle registers, even one that emitted nothing: Prism finalizes every bundle of a stage that asks for
        # finalization (the SDK reports an error for a bundle that did not register), and an empty mark's confirmation
        # is what lets the previous marks be acknowledged (Leases.confirm).
        bundle_finalizer.register(functools.partial(reader.leases.confirm, reader.leases.cut(self._owner, lane)))

    def _report(self, reader: SubscriptionReader, emitted: int) -> None:
        acknowledged, released = reader.unreported()
        for counter, count in ((self._pulled, emitted), (self._acknowledged, acknowledged), (self._released, released)):
            if count:
                counter.inc(count)
        self._outstanding.set(reader.leases.count())

    def teardown(self) -> None:
        if getattr(self, "_reader", None) is not None:
            _detach(self._reader, self._owner)
            self._reader = None


class PullFromPubSub(beam.PTransform):
    """Pub/Sub messages (Beam ``PubsubMessage``s, timestamped by publish time) by synchronous pull, acknowledged
    after the runner commits them. Give ``subscription`` or ``topic`` (read through a temporary subscription)."""

    def __init__(
        self, subscription: str | None = None, topic: str | None = None, settings: PullSettings | None = None
    ) -> None:
        super().__init__()
        if (subscription is None) == (topic is None):
            raise ValueError("give exactly one of subscription and topic")
        self._subscription = subscription
        self._topic = topic
        self._settings = settings or PullSettings()

    def expand(self, pbegin):
        job = uuid.uuid4().hex
        subscription = self._subscription or temporary_subscription(self._topic, job)
        spec = PullSpec(subscription, self._topic, job, self._settings)
        return pbegin | "Start" >> beam.Create([spec]) | "Pull" >> beam.ParDo(_PullFn())
