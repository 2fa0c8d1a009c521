"""A stored quest as the engine reads it: one conversion from a Quest row to a QuestDef."""

from __future__ import annotations

from typing import Any

from models import Quest
from questline.engine import QuestDef, parse_quest


def quest_fields(quest: Quest) -> dict[str, Any]:
    """The quest row (and its reward bundle) in the form `parse_quest` reads."""
    reward = quest.reward
    items = reward.items or [{"item": reward.reward_item, "qty": reward.reward_qty}]
    return {
        "quest_id": quest.quest_id,
        "target": quest.streak,
        "rewards": list(items),
        "trigger": quest.trigger,
        "measure": quest.measure,
        "period": quest.period,
        "reset_at": quest.reset_at,
        "week_starts_on": quest.week_starts_on,
        "timezone": quest.timezone,
        # The column holds the limit itself: NULL is "no limit", not "the default".
        "max_per_period": quest.max_per_period,
        "duplication": quest.duplication,
        "grace_periods": quest.grace_periods,
        "requires": list(quest.requires or []),
        "starts_at": quest.starts_at,
        "ends_at": quest.ends_at,
        "claim_within_seconds": quest.claim_within_seconds,
        "auto_claim": quest.auto_claim,
    }


def quest_definition(quest: Quest) -> QuestDef:
    """The engine's definition of a stored quest; QuestInvalid if the row breaks a rule."""
    return parse_quest(quest_fields(quest))
