"""The one-line report every fault test prints: load held, fault injected, records in, out + dead-lettered, lost.

Lines are also collected for the run's terminal summary ("fault reports"); docs/reliability.md quotes them.
"""

from __future__ import annotations

from dataclasses import dataclass

REPORTS: list[str] = []


@dataclass(frozen=True)
class FaultReport:
    test: str
    load: str  # what kept flowing while the fault was on
    fault: str  # what was injected, how long, how many times
    records_in: int  # records the source delivered (duplicates and bad records included)
    records_out: int  # events in the final aggregates (sum of each group's final-pane event_count)
    dead_lettered: int
    duplicates: int  # repeats dropped by the event_id dedup
    detail: str = ""

    @property
    def lost(self) -> int:
        return self.records_in - self.records_out - self.dead_lettered - self.duplicates

    def line(self) -> str:
        detail = f" | {self.detail}" if self.detail else ""
        return (
            f"{self.test}: load held: {self.load} | fault injected: {self.fault} | records in {self.records_in:,}, "
            f"out {self.records_out:,} + dead-lettered {self.dead_lettered:,} + duplicates dropped {self.duplicates:,}"
            f" | lost = {self.lost}{detail}"
        )

    def emit(self) -> str:
        line = self.line()
        print(line)
        REPORTS.append(line)
        return line
