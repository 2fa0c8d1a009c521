"""What the shell stores per (user, quest); the evaluator reads it and returns new copies."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True)
class PeriodState:
    """Progress and completions within one period (key "" for quests without periods)."""

    progress: Decimal = Decimal(0)
    completions: int = 0


@dataclass(frozen=True)
class QuestState:
    """One user's standing on one quest.

    `periods` holds count/sum progress by period key; a missing key is PeriodState().
    Consecutive quests keep `streak_periods` (the sorted indexes of qualifying periods) and
    `streak_completions` (completions their streaks earned, before the duplication cap)
    instead, and no `periods` entries. `best_streak` is the longest run so far.
    """

    completions: int = 0
    best_streak: int = 0
    streak_periods: tuple[int, ...] = ()
    streak_completions: int = 0
    periods: Mapping[str, PeriodState] = field(default_factory=dict)

    def period(self, key: str) -> PeriodState:
        """The state of the period `key` (zero when nothing was stored for it)."""
        return self.periods.get(key, NOTHING_YET)


NOTHING_YET = PeriodState()
NEW_QUEST = QuestState()
