"""What applying an event did: the effects the shell records, and the evaluator's answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import ClassVar

from questline.engine.definitions import RewardItem
from questline.engine.state import QuestState


@dataclass(frozen=True)
class QuestProgressed:
    """The event counted for the quest. `progress` is what is left after completions;
    `reached` is where the event took it before completions took `target` off (v1's
    quest_progress history carries that number: 3 on the sign-in that completes)."""

    history_type: ClassVar[str] = "quest_progress"
    quest_id: int
    period_key: str
    progress: Decimal
    reached: Decimal


@dataclass(frozen=True)
class QuestCompleted:
    """The quest was completed once more; `completion_no` is the lifetime number (1, 2, ...)."""

    history_type: ClassVar[str] = "quest_completed"
    quest_id: int
    completion_no: int
    period_key: str


@dataclass(frozen=True)
class RewardEarned:
    """One reward per completion. The shell stamps earned_at; with `auto_claim` it also
    credits the wallet and records "reward_claimed". Unclaimed, it expires after
    `expires_after_seconds` (None: never)."""

    history_type: ClassVar[str] = "reward_earned"
    quest_id: int
    completion_no: int
    period_key: str
    items: tuple[RewardItem, ...]
    auto_claim: bool
    expires_after_seconds: int | None


Effect = QuestProgressed | QuestCompleted | RewardEarned


@dataclass(frozen=True)
class Outcome:
    """The evaluator's answer: new states of the quests it changed, and effects in order."""

    states: dict[int, QuestState] = field(default_factory=dict)
    effects: list[Effect] = field(default_factory=list)
