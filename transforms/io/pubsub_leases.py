"""The Pub/Sub messages a worker holds on one subscription, from pull to acknowledgement.

A pulled message is *held*: Pub/Sub does not redeliver it while its ack deadline runs, and this module keeps
extending that deadline (``ModifyAckDeadline``) for as long as the message is held. It stops being held in one of
two ways:

- **acknowledged**, once the runner has durably committed the bundle that emitted it. The source cuts a ``Mark``
  (the ack ids one bundle of one lane emitted) at the end of every bundle and hands ``Leases.confirm`` to Beam's
  bundle finalizer. A mark is acknowledged when the finalizer has confirmed it *and* a mark of the same lane cut after
  that confirmation has been confirmed too. Flink's portable runner finalizes, at each completed checkpoint, every
  bundle that finished before the notification, bundles that finished after the checkpoint's barrier (and so are not
  in it) included; the second confirmation proves that a later checkpoint, which does contain the bundle, completed.
  Elsewhere (Prism) it delays an acknowledgement by one bundle.
- **released** (a nack: deadline 0, so redelivered at once) when its bundle will never be committed: the bundle
  failed; its DoFn instance was torn down before the runner finalized it; or later bundles of its lane were
  confirmed several times over while it never was (Flink restarted the job from a checkpoint: the old bundles'
  finalizations are gone with the old tasks, whose workers may live on). A message held longer than ``max_hold_s``
  is released too, with a warning (the runner never finalized its bundle; a redelivery, deduplicated downstream,
  beats holding it forever).

Nothing here drops a message: it is either acknowledged after the commit or redelivered. The calls run on one
background thread per subscription, are retried with exponential backoff, and failures are logged at a bounded
interval (``ThrottledLog``). Memory is bounded by the caller, which stops pulling at ``count() >= max_held``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_LOG = logging.getLogger(__name__)

# Pub/Sub takes up to 2500 ack ids and 512 KiB per Acknowledge/ModifyAckDeadline call; Google's client library sends
# at most 1000 (its dispatcher's _ACK_IDS_BATCH_SIZE), which keeps long real ack ids under the size limit.
ACK_IDS_PER_CALL = 1000
MIN_LEASE_S = 10  # Pub/Sub's minimum ack deadline
MAX_LEASE_S = 600  # and its maximum
NACK_ATTEMPTS = 5  # a nack that keeps failing only delays the redelivery until the deadline expires
# A mark never confirmed while marks of its lane cut this many confirmations later were: its finalization is lost.
ORPHANED_AFTER = 3
_TICK_S = 1.0


def rpc_errors() -> tuple[type[BaseException], ...]:
    """What a Pub/Sub call raises that is worth retrying: service, transport and credential errors."""
    import grpc
    from google.api_core.exceptions import GoogleAPIError
    from google.auth.exceptions import GoogleAuthError

    return (GoogleAPIError, GoogleAuthError, grpc.RpcError, OSError)


class ThrottledLog:
    """Logs a recurring condition at most once per ``interval_s`` per key, counting the occurrences in between."""

    def __init__(self, logger: logging.Logger, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, message: str, *args: Any) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (and %d more times since the last report)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args)


class AckClient:
    """The two calls leases make on one subscription, through Google's SubscriberClient (no built-in retries:
    ``Leases`` retries itself, so that a slow or failing call never blocks a bundle)."""

    def __init__(self, client: Any, subscription: str, rpc_timeout_s: float) -> None:
        self._client = client
        self._subscription = subscription
        self._timeout = rpc_timeout_s

    def acknowledge(self, ack_ids: Sequence[str]) -> None:
        self._client.acknowledge(
            request={"subscription": self._subscription, "ack_ids": list(ack_ids)}, timeout=self._timeout, retry=None
        )

    def modify_ack_deadline(self, ack_ids: Sequence[str], seconds: int) -> None:
        self._client.modify_ack_deadline(
            request={"subscription": self._subscription, "ack_ids": list(ack_ids), "ack_deadline_seconds": seconds},
            timeout=self._timeout,
            retry=None,
        )


@dataclass(eq=False)
class _Group:
    """Ack ids pulled together (one Pull response): they share a deadline and a fate."""

    ids: list[str]
    oldest_publish_us: int
    pulled_at: float  # monotonic
    deadline: float  # monotonic: when Pub/Sub may redeliver them unless extended
    let_go: bool = False  # released after max_hold_s


@dataclass(eq=False)
class Mark:
    """What one bundle emitted, acknowledged once the runner has committed the bundle (see ``Leases.confirm``)."""

    owner: int
    lane: int
    groups: list[_Group]
    cut_at: int  # how many of its lane's marks had been confirmed when the bundle ended
    confirmed_at: int | None = None
    settled: bool = False  # acknowledged or released

    @property
    def size(self) -> int:
        return sum(len(g.ids) for g in self.groups)


@dataclass(eq=False)
class _Call:
    """A queued Acknowledge or nack with its retry state."""

    ids: list[str]
    queued_at: float
    attempts: int = 0
    next_at: float = 0.0


class Leases:
    """The held messages of one subscription in this worker process, shared by every DoFn instance that reads it.

    Thread-safe. ``owner`` identifies a DoFn instance: whatever it holds is released when it is torn down.
    """

    def __init__(
        self,
        client: AckClient,
        subscription: str,
        *,
        lease_s: int = MIN_LEASE_S,
        max_hold_s: float = 1800.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        ack_give_up_s: float = 600.0,
        log_interval_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._subscription = subscription
        self._lease_s = _clamp_lease(lease_s)
        self._max_hold_s = max_hold_s
        self._backoff = backoff_s
        self._ack_give_up_s = ack_give_up_s
        self._clock = clock
        self._log = ThrottledLog(_LOG, log_interval_s, clock)
        self._cond = threading.Condition()
        self._in_flight: dict[int, list[_Group]] = {}  # owner -> groups its current bundle emitted
        self._marks: dict[int, list[Mark]] = {}  # owner -> its marks not yet settled
        self._confirmations: dict[int, int] = {}  # lane -> marks confirmed so far
        self._held = 0
        self._acks: list[_Call] = []
        self._nacks: list[_Call] = []
        self._renew_retry_at = 0.0
        self._renew_failures = 0
        self._closing_until: float | None = None
        self.failure: BaseException | None = None  # set if the background thread died
        # Totals since the start (what the source reports as metrics): ack ids Pub/Sub accepted; ack ids handed back
        # for redelivery instead (nacked, whatever the nack call's fate, or whose acknowledgement was given up).
        self.acknowledged = 0
        self.released = 0
        self._thread = threading.Thread(target=self._run, name=f"pubsub-leases {subscription}", daemon=True)
        self._thread.start()

    # -- the reader's side -------------------------------------------------------------------------------------

    @property
    def lease_s(self) -> int:
        return self._lease_s

    def set_lease(self, seconds: int) -> None:
        """The subscription's ack deadline, once known: how far each extension reaches."""
        with self._cond:
            self._lease_s = _clamp_lease(seconds)

    def count(self) -> int:
        """Messages held or waiting for their acknowledgement to be sent (what memory is bounded by)."""
        with self._cond:
            return self._held + sum(len(call.ids) for call in self._acks)

    def hold(self, owner: int, ack_ids: Sequence[str], oldest_publish_us: int, pulled_at: float) -> None:
        """Messages ``owner`` pulled; ``pulled_at`` (monotonic) is when the Pull call started: their deadline runs
        from then at the latest."""
        if not ack_ids:
            return
        group = _Group(list(ack_ids), oldest_publish_us, pulled_at, pulled_at + self._lease_s)
        with self._cond:
            self._in_flight.setdefault(owner, []).append(group)
            self._held += len(group.ids)
            self._cond.notify()

    def cut(self, owner: int, lane: int) -> Mark:
        """Ends ``owner``'s bundle of ``lane``: what it emitted becomes a mark for the bundle finalizer to confirm."""
        with self._cond:
            mark = Mark(owner, lane, self._in_flight.pop(owner, []), self._confirmations.get(lane, 0))
            if mark.groups:
                self._marks.setdefault(owner, []).append(mark)
            else:
                mark.settled = True
            return mark

    def confirm(self, mark: Mark) -> None:
        """The bundle finalizer's callback: the runner has committed the bundle that cut ``mark``.

        Acknowledges every mark of the lane first confirmed no later than ``mark.cut_at``: ``mark``'s bundle ended
        after that confirmation, so the commit just confirmed covers those marks' bundles too, however far the
        runner's notion of "committed" lagged. Releases the lane's marks cut ``ORPHANED_AFTER`` confirmations or more
        before ``mark`` and never confirmed: their bundles' finalizations are lost.
        """
        with self._cond:
            lane = mark.lane
            self._confirmations[lane] = confirmations = self._confirmations.get(lane, 0) + 1
            if not mark.settled and mark.confirmed_at is None:
                mark.confirmed_at = confirmations
            ready, orphans = [], []
            for other in self._lane_marks(lane):
                if other.confirmed_at is not None and other.confirmed_at <= mark.cut_at:
                    ready.append(other)
                elif other.confirmed_at is None and other.cut_at <= mark.cut_at - ORPHANED_AFTER:
                    orphans.append(other)
            acked = [i for m in ready for i in self._settle(m)]
            if acked:
                self._acks.append(_Call(acked, self._clock()))
                self._cond.notify()
            released = [i for m in orphans for i in self._settle(m)]
            self._nack_locked(released)
        if released:
            self._log.log(
                logging.INFO,
                "orphans",
                "Pub/Sub %s: %d messages of bundles the runner will not finalize (it restarted from a checkpoint?) "
                "released for redelivery",
                self._subscription,
                len(released),
            )

    def release_in_flight(self, owner: int) -> None:
        """``owner``'s bundle failed: what it emitted so far is redelivered."""
        with self._cond:
            self._nack_locked(self._take(self._in_flight.pop(owner, [])))

    def release(self, owner: int) -> None:
        """``owner`` is gone (torn down): none of its bundles will be finalized any more; redeliver their messages."""
        with self._cond:
            ids = self._take(self._in_flight.pop(owner, []))
            for mark in list(self._marks.get(owner, [])):
                ids.extend(self._settle(mark))
            self._nack_locked(ids)

    def totals(self) -> tuple[int, int]:
        """(acknowledged, released) since the start."""
        with self._cond:
            return self.acknowledged, self.released

    def owners(self) -> set[int]:
        with self._cond:
            return set(self._in_flight) | set(self._marks)

    def oldest_unconfirmed_publish_us(self) -> int | None:
        """Publish time of the oldest held message whose bundle the runner has not confirmed (None: none is)."""
        with self._cond:
            oldest = [g.oldest_publish_us for groups in self._in_flight.values() for g in groups if not g.let_go]
            oldest.extend(
                g.oldest_publish_us
                for marks in self._marks.values()
                for m in marks
                if m.confirmed_at is None
                for g in m.groups
                if not g.let_go
            )
            return min(oldest, default=None)

    def close(self, flush_s: float = 10.0) -> None:
        """Releases everything still held, sends what is queued (for at most ``flush_s``) and stops the thread."""
        with self._cond:
            for owner in set(self._in_flight) | set(self._marks):
                self.release(owner)
            self._closing_until = self._clock() + flush_s
            self._cond.notify()
        self._thread.join(timeout=flush_s + 5)

    # -- bookkeeping (the caller holds the lock) ---------------------------------------------------------------

    def _take(self, groups: list[_Group]) -> list[str]:
        ids = [i for g in groups if not g.let_go for i in g.ids]
        self._held -= len(ids)
        return ids

    def _settle(self, mark: Mark) -> list[str]:
        if mark.settled:
            return []
        mark.settled = True
        owned = self._marks.get(mark.owner, [])
        if mark in owned:
            owned.remove(mark)
            if not owned:
                del self._marks[mark.owner]
        return self._take(mark.groups)

    def _nack_locked(self, ids: list[str]) -> None:
        if ids:
            self.released += len(ids)
            self._nacks.append(_Call(ids, self._clock()))
            self._cond.notify()

    def _lane_marks(self, lane: int) -> list[Mark]:
        return [m for marks in self._marks.values() for m in marks if m.lane == lane]

    def _held_groups(self) -> Iterator[_Group]:
        for groups in self._in_flight.values():
            yield from groups
        for marks in self._marks.values():
            for mark in marks:
                yield from mark.groups

    # -- the background thread ---------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait(timeout=self._sleep_s())
                    closing = self._closing_until is not None
                    if closing and (self._clock() >= self._closing_until or not (self._acks or self._nacks)):
                        self._give_up_queued()
                        return
                    acks = _due(self._acks, self._clock())
                    nacks = _due(self._nacks, self._clock())
                    renewals = [] if closing else self._due_renewals()
                    self._let_go_overdue()
                self._send(acks, self._client.acknowledge, "acknowledge", self._acks)
                self._send(nacks, lambda ids: self._client.modify_ack_deadline(ids, 0), "nack", self._nacks)
                if renewals:
                    self._renew(renewals)
        except BaseException as exc:  # the lease thread must never die silently: readers check `failure`
            self.failure = exc
            _LOG.exception("Pub/Sub lease thread for %s failed; reading stops", self._subscription)
            raise

    def _sleep_s(self) -> float:
        now = self._clock()
        due = [now + _TICK_S]
        due.extend(call.next_at for call in (*self._acks, *self._nacks))
        if self._closing_until is None:
            if self._renew_retry_at > now:  # extensions back off after a failure
                due.append(self._renew_retry_at)
            else:
                margin = self._margin_s()
                due.extend(g.deadline - margin for g in self._held_groups() if not g.let_go)
        return max(0.0, min(due) - now)

    def _margin_s(self) -> float:
        # Extend once a third of the lease is left (at least 3 s): room for a slow or retried call.
        return max(self._lease_s / 3, 3.0)

    def _due_renewals(self) -> list[_Group]:
        now = self._clock()
        if now < self._renew_retry_at:
            return []
        margin = self._margin_s()
        return [g for g in self._held_groups() if not g.let_go and g.deadline - margin <= now]

    def _let_go_overdue(self) -> None:
        now = self._clock()
        overdue = [g for g in self._held_groups() if not g.let_go and now - g.pulled_at > self._max_hold_s]
        if not overdue:
            return
        ids = [i for g in overdue for i in g.ids]
        for group in overdue:
            group.let_go = True
        self._held -= len(ids)
        self._nack_locked(ids)
        self._log.log(
            logging.WARNING,
            "let-go",
            "Pub/Sub %s: %d messages held for more than %.0f s without their bundle being finalized by the runner "
            "(are checkpoints completing?); released for redelivery, the pipeline deduplicates them",
            self._subscription,
            len(ids),
            self._max_hold_s,
        )

    def _give_up_queued(self) -> None:
        left = sum(len(call.ids) for call in self._acks)
        self.released += left
        if left:
            _LOG.warning(
                "Pub/Sub %s: %d acknowledgements could not be sent before the reader closed; those messages will be "
                "redelivered (the pipeline deduplicates them)",
                self._subscription,
                left,
            )
        self._acks.clear()
        self._nacks.clear()

    def _send(self, calls: list[_Call], rpc: Callable[[list[str]], None], what: str, queue: list[_Call]) -> None:
        errors = rpc_errors()
        for call in calls:
            try:
                for start in range(0, len(call.ids), ACK_IDS_PER_CALL):
                    rpc(call.ids[start : start + ACK_IDS_PER_CALL])
            except errors as exc:
                self._retry_or_give_up(call, what, queue, exc)
                continue
            if what == "acknowledge":
                with self._cond:
                    self.acknowledged += len(call.ids)

    def _retry_or_give_up(self, call: _Call, what: str, queue: list[_Call], exc: BaseException) -> None:
        now = self._clock()
        call.attempts += 1
        give_up = (what == "nack" and call.attempts >= NACK_ATTEMPTS) or (
            what == "acknowledge" and now - call.queued_at > self._ack_give_up_s
        )
        if give_up:
            if what == "acknowledge":
                with self._cond:
                    self.released += len(call.ids)
            self._log.log(
                logging.WARNING,
                f"{what}-give-up",
                "Pub/Sub %s: gave up on %s of %d messages after %d attempts (%s); Pub/Sub redelivers them when "
                "their deadline expires and the pipeline deduplicates them",
                self._subscription,
                what,
                len(call.ids),
                call.attempts,
                _describe(exc),
            )
            return
        call.next_at = now + _backoff(self._backoff, call.attempts)
        with self._cond:
            queue.append(call)
        self._log.log(
            logging.WARNING,
            f"{what}-retry",
            "Pub/Sub %s: %s of %d messages failed (%s); retrying with backoff",
            self._subscription,
            what,
            len(call.ids),
            _describe(exc),
        )

    def _renew(self, groups: list[_Group]) -> None:
        lease = self._lease_s
        ids = [i for g in groups for i in g.ids]
        sent_at = self._clock()
        try:
            for start in range(0, len(ids), ACK_IDS_PER_CALL):
                self._client.modify_ack_deadline(ids[start : start + ACK_IDS_PER_CALL], lease)
        except rpc_errors() as exc:
            self._renew_failures += 1
            self._renew_retry_at = self._clock() + _backoff(self._backoff, self._renew_failures)
            self._log.log(
                logging.WARNING,
                "renew",
                "Pub/Sub %s: extending the ack deadline of %d messages failed (%s); retrying with backoff (if it "
                "keeps failing, Pub/Sub redelivers them and the pipeline deduplicates them)",
                self._subscription,
                len(ids),
                _describe(exc),
            )
            return
        self._renew_failures = 0
        with self._cond:
            for group in groups:
                group.deadline = sent_at + lease


def _clamp_lease(seconds: int) -> int:
    return min(max(int(seconds), MIN_LEASE_S), MAX_LEASE_S)


def _backoff(bounds: tuple[float, float], attempts: int) -> float:
    first, cap = bounds
    return min(cap, first * 2 ** max(0, attempts - 1))


def _due(queue: list[_Call], now: float) -> list[_Call]:
    due = [call for call in queue if call.next_at <= now]
    if due:
        queue[:] = [call for call in queue if call.next_at > now]
    return due


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
