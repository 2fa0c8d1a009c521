"""Streaks of qualifying periods for `consecutive` quests.

A run is a maximal group of qualifying period indexes in which each gap (periods missed
between two qualifying ones) is at most `grace_periods`; its length counts the qualifying
periods only. A run of length L has earned L // target completions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Run:
    """Qualifying periods `first` .. `last` (indexes), `length` of them qualifying."""

    first: int
    last: int
    length: int

    def reaches(self, index: int, grace_periods: int) -> bool:
        """True when a qualifying `index` would join this run (within the grace either side)."""
        return self.first - grace_periods - 1 <= index <= self.last + grace_periods + 1


def runs(periods: Sequence[int], grace_periods: int) -> list[Run]:
    """The runs of the sorted qualifying indexes `periods`, oldest first."""
    found: list[Run] = []
    for index in periods:
        if found and index - found[-1].last - 1 <= grace_periods:
            last = found[-1]
            found[-1] = Run(last.first, index, last.length + 1)
        else:
            found.append(Run(index, index, 1))
    return found


@dataclass(frozen=True)
class Joined:
    """A period that newly qualifies: the run it now belongs to, and the completions the
    streaks gained (the runs it joined had earned their own; the merged run may earn more)."""

    run: Run
    earned: int


def join(periods: Sequence[int], index: int, grace_periods: int, target: int) -> Joined:
    """What happens when the period `index` (not yet in `periods`) qualifies."""
    touched = [r for r in runs(periods, grace_periods) if r.reaches(index, grace_periods)]
    merged = Run(
        first=min([index, *(r.first for r in touched)]),
        last=max([index, *(r.last for r in touched)]),
        length=1 + sum(r.length for r in touched),
    )
    # Merging never loses completions: (a + b + 1) // t >= a // t + b // t.
    earned = merged.length // target - sum(r.length // target for r in touched)
    return Joined(merged, earned)


def live_run(periods: Sequence[int], grace_periods: int, current: int) -> Run | None:
    """The latest run while it can still grow from period `current`, else None."""
    found = runs(periods, grace_periods)
    if found and found[-1].last >= current - (grace_periods + 1):
        return found[-1]
    return None


def position(periods: Sequence[int], index: int, grace_periods: int) -> int:
    """Where the qualifying period `index` stands in its run (1 = first); 0 if it does not
    qualify."""
    if index not in periods:
        return 0
    run = next(r for r in runs(periods, grace_periods) if r.first <= index <= r.last)
    return sum(1 for i in periods if run.first <= i <= index)
