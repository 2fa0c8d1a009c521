"""History entries about earned rewards, built in one place so that every path that
records one (a claim, an auto-claim quest, a quest switched to auto-claim) writes the
same payload."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from models import EventType


def reward_claimed_entry(
    *,
    user_id: int,
    quest_id: int,
    user_reward_id: int,
    completion_no: int,
    items: Sequence[Mapping[str, Any]],
    now: datetime,
    auto_claim: bool = False,
) -> dict[str, Any]:
    """The reward_claimed history row (events table) of one earned reward and its bundle
    [{"item", "qty"}]; reward_item/reward_qty repeat the first item for v1 readers."""
    bundle = [{"item": str(line["item"]), "qty": int(line["qty"])} for line in items]
    data: dict[str, Any] = {
        "user_reward_id": user_reward_id,
        "completion_no": completion_no,
        "reward_item": bundle[0]["item"],
        "reward_qty": bundle[0]["qty"],
        "items": bundle,
    }
    if auto_claim:
        data["auto_claim"] = True
    return {
        "user_id": user_id,
        "quest_id": quest_id,
        "type": EventType.REWARD_CLAIMED,
        "data": data,
        "created_at": now,
    }
