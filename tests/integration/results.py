"""What end-to-end tests read back: final aggregates per (window_start, event_type, key), dead letters."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipelines.summary import final_panes


def final_counts(rows: list[dict[str, Any]]) -> dict[tuple, tuple]:
    """(window_start, event_type, key) -> (event_count, value_sum, distinct_users) of each group's final pane."""
    return {
        (group[0], group[2], group[3]): (row["event_count"], row["value_sum"], row["distinct_users"])
        for group, row in final_panes(rows).items()
    }


def wait_for_bigquery(dataset: Any, expected: dict, dead_letters: int, timeout_s: float) -> tuple[dict, list]:
    """Polls the dataset's aggregates and dead_letter tables until they hold ``expected`` and enough dead letters."""
    from tests.integration.test_bigquery_sink import _aggregates, _dead_letters

    deadline = time.monotonic() + timeout_s
    finals: dict = {}
    dead: list = []
    while time.monotonic() < deadline:
        finals = final_counts(_aggregates(dataset.client, dataset.table("aggregates")))
        dead = _dead_letters(dataset.client, dataset.table("dead_letter"))
        if finals == expected and len(dead) >= dead_letters:
            break
        time.sleep(1)
    return finals, dead


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    """Polls ``condition`` every half second; fails the test, naming ``what``, if it is still false at the timeout."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.5)


def assert_late_panes_only_with_late_data(rows: list[dict[str, Any]]) -> None:
    """A LATE pane carries events its window got after the pane before it: never a repeat. (A window that closes
    without late data emits no closing pane, so its final pane is the highest pane_index, not one flagged last.)"""
    by_window: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        by_window.setdefault((row["window_start"], row["event_type"], row["key"]), []).append(row)
    for panes in by_window.values():
        panes.sort(key=lambda row: row["pane_index"])
        for before, pane in zip(panes, panes[1:], strict=False):
            if pane["pane_timing"] == "LATE":
                assert pane["event_count"] > before["event_count"], (before, pane)
