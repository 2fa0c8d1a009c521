"""History entries about earned rewards, built in one place so that every path that
records one (a claim, an auto-claim quest, a quest switched to auto-claim) writes the
same payload; and `add`, through which every path appends history, so that each
quest_completed, reward_earned and reward_claimed entry writes its webhook deliveries
in the same transaction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from models import EventType
from questline.quests import repository
from questline.webhooks import repository as webhooks_repository
from questline.webhooks import service as webhooks


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


def add(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Append history entries, and one webhook delivery per subscribed webhook for each
    entry of a webhook event type (questline.webhooks.service.announce). Without such
    entries or subscribers this is one insert, as before."""
    if not rows:
        return
    subscribed: list[tuple[int, list[str]]] = []
    if any(row["type"] in webhooks.EVENT_TYPES for row in rows):
        subscribed = webhooks_repository.subscriptions(session)
    if not subscribed:
        repository.add_events(session, rows)
        return
    event_ids = repository.add_events(session, rows, returning=True)
    webhooks.announce(session, rows, event_ids, subscribed)
