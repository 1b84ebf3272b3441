"""Live test traffic for the fault tests: events published at a steady rate, with the exact results they must give.

``Traffic`` makes the records (valid events stamped with the wall clock, every ``duplicate_every``-th record a
re-publish of an earlier event's bytes, every ``bad_every``-th a malformed one) and remembers what it made;
``expected()`` is the final aggregate of each (window, event_type, key) those records must produce.
``SteadyPublisher`` publishes them to a Pub/Sub topic from a thread until told to stop.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from transforms.timefmt import format_rfc3339_us, now_us, parse_rfc3339_us

EVENT_TYPES = ("click", "view")
PAGES = ("/a", "/b", "/c")


class Traffic:
    def __init__(self, name: str, window_s: int, duplicate_every: int = 10, bad_every: int = 25) -> None:
        self._name = name
        self._window_us = window_s * 1_000_000
        self._duplicate_every = duplicate_every
        self._bad_every = bad_every
        self._lock = threading.Lock()
        self.valid: list[dict[str, Any]] = []  # unique events, as published
        self.payloads: dict[str, bytes] = {}  # event_id -> bytes
        self.bad: list[bytes] = []
        self.duplicates = 0
        self.count = 0

    def event(self, n: int, at_us: int | None = None, **fields: Any) -> dict[str, Any]:
        return {
            "event_id": f"{self._name}-{n}",
            "event_type": EVENT_TYPES[n % len(EVENT_TYPES)],
            "user_id": f"user-{n % 13}",
            "event_time": format_rfc3339_us(now_us() if at_us is None else at_us),
            "page": PAGES[n % len(PAGES)],
            "value": n % 5 + 1,
            **fields,
        }

    def next(self) -> bytes:
        """The next record's bytes (recorded as valid, duplicate or bad)."""
        with self._lock:
            n = self.count
            self.count += 1
            if n and n % self._bad_every == 0:
                payload = f'{{"event_id": "{self._name}-bad-{n}", "event_type": '.encode()  # cut short
                self.bad.append(payload)
                return payload
            if n and n % self._duplicate_every == 0 and self.valid:
                self.duplicates += 1
                return self.payloads[self.valid[(n * 7) % len(self.valid)]["event_id"]]
            return self.add(self.event(n))

    def add(self, event: dict[str, Any]) -> bytes:
        payload = json.dumps(event).encode()
        self.valid.append(event)
        self.payloads[event["event_id"]] = payload
        return payload

    def window_start_us(self, event: dict[str, Any]) -> int:
        at = parse_rfc3339_us(event["event_time"])
        return at - at % self._window_us

    def last_window_end_us(self) -> int:
        return max(self.window_start_us(e) for e in self.valid) + self._window_us

    def expected(self, events: list[dict[str, Any]] | None = None) -> dict[tuple, tuple]:
        """(window_start, event_type, key) -> (event_count, value_sum, distinct_users), as ``final_counts`` gives."""
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for event in self.valid if events is None else events:
            groups[(format_rfc3339_us(self.window_start_us(event)), event["event_type"], event["page"])].append(event)
        return {
            group: (len(items), float(sum(e["value"] for e in items)), len({e["user_id"] for e in items}))
            for group, items in groups.items()
        }


class SteadyPublisher(threading.Thread):
    """Publishes ``make()`` to ``topic`` at ``rate`` records/s until ``stop()`` (or ``limit`` records)."""

    def __init__(
        self, publisher: Any, topic: str, rate: float, make: Callable[[], bytes], limit: int | None = None
    ) -> None:
        super().__init__(name="steady-publisher", daemon=True)
        self._limit = limit
        self._publisher = publisher
        self._topic = topic
        self._interval = 1.0 / rate
        self._make = make
        self._halt = threading.Event()
        self.published = 0
        self.started_at = 0.0
        self.stopped_at = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        self.started_at = time.monotonic()
        due = self.started_at
        try:
            while not self._halt.is_set() and (self._limit is None or self.published < self._limit):
                self._publisher.publish(self._topic, self._make()).result(timeout=30)
                self.published += 1
                due += self._interval
                self._halt.wait(max(0.0, due - time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test through .error
            self.error = exc
        finally:
            self.stopped_at = time.monotonic()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=60)
        if self.error is not None:
            raise AssertionError(f"publishing failed: {self.error!r}")

    @property
    def seconds(self) -> float:
        return self.stopped_at - self.started_at
