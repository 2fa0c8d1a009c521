"""The quest rules, applied to sign-ins: one implementation for every caller.

For each sign-in and each active quest: at the duplication cap nothing happens;
otherwise curr_streak grows, and at `streak` the quest completes once, curr_streak
resets and a reward is earned (credited at once for auto-claim quests).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from models import EventType
from models.base import utcnow
from models.progress import RewardStatus
from questline.quests import repository
from questline.users import repository as users_repository


@dataclass
class Applied:
    """What one call applied: the events it marked processed and what they granted."""

    sign_ins: list[int] = field(default_factory=list)
    users: dict[int, int] = field(default_factory=dict)  # sign_in_id -> user_id
    lag_seconds: list[float] = field(default_factory=list)
    rewards_earned: int = 0
    history_events: int = 0


def apply_sign_ins(
    session: Session,
    *,
    event_ids: Sequence[int] | None = None,
    created_before: datetime | None = None,
    limit: int = 1,
    wait: bool = False,
    guard: bool = True,
) -> Applied:
    """Lock pending sign-ins, apply the rules to them, mark them processed. Never commits.

    `event_ids` picks events; otherwise the oldest pending ones (older than
    `created_before`) up to `limit`. Events locked by another worker are skipped
    unless `wait`. Already processed events are left alone unless `guard` is off
    (a test-only fault that the reliability suite must catch).
    """
    now = utcnow()
    locked = repository.lock_sign_ins(
        session,
        event_ids=event_ids,
        created_before=created_before,
        limit=limit if event_ids is None else len(event_ids),
        skip_locked=not wait,
        include_processed=not guard,
    )
    applied = Applied()
    if not locked:
        return applied

    quests = repository.active_quest_rules(session)
    progress = repository.lock_progress(
        session, [row.user_id for row in locked], [q.quest_id for q in quests], now=now
    )

    history: list[dict[str, Any]] = []
    earned: list[dict[str, Any]] = []
    credits: dict[int, dict[str, int]] = defaultdict(lambda: {"gold": 0, "diamond": 0})
    for sign_in in locked:
        applied.sign_ins.append(sign_in.event_id)
        applied.users[sign_in.event_id] = sign_in.user_id
        applied.lag_seconds.append((now - sign_in.created_at).total_seconds())
        for quest in quests:
            row = progress[(sign_in.user_id, quest.quest_id)]
            if row.completions >= quest.duplication:
                continue  # at the cap: no change, no quest event
            row.curr_streak += 1
            row.updated_at = now
            base = {"user_id": sign_in.user_id, "quest_id": quest.quest_id, "created_at": now}
            history.append(
                {
                    **base,
                    "type": EventType.QUEST_PROGRESS,
                    "data": {"sign_in_id": sign_in.event_id, "curr_streak": row.curr_streak},
                }
            )
            if row.curr_streak < quest.streak:
                continue
            row.completions += 1
            row.curr_streak = 0
            reward = {
                "sign_in_id": sign_in.event_id,
                "completion_no": row.completions,
                "reward_item": quest.reward_item,
                "reward_qty": quest.reward_qty,
            }
            history.append(
                {
                    **base,
                    "type": EventType.QUEST_COMPLETED,
                    "data": {"sign_in_id": sign_in.event_id, "completions": row.completions},
                }
            )
            history.append({**base, "type": EventType.REWARD_EARNED, "data": reward})
            earned.append(
                {
                    "user_id": sign_in.user_id,
                    "quest_id": quest.quest_id,
                    "completion_no": row.completions,
                    "reward_item": quest.reward_item,
                    "reward_qty": quest.reward_qty,
                    "status": RewardStatus.CLAIMED
                    if quest.auto_claim
                    else RewardStatus.NOT_CLAIMED,
                    "earned_at": now,
                    "claimed_at": now if quest.auto_claim else None,
                }
            )
            if quest.auto_claim:
                credits[sign_in.user_id][quest.reward_item] += quest.reward_qty
                history.append(
                    reward_claimed_event(
                        user_id=sign_in.user_id,
                        quest_id=quest.quest_id,
                        at=now,
                        sign_in_id=sign_in.event_id,
                        completion_no=row.completions,
                        reward_item=quest.reward_item,
                        reward_qty=quest.reward_qty,
                        auto_claim=True,
                    )
                )

    session.flush()  # progress rows
    repository.add_earned_rewards(session, earned)
    users_repository.credit_wallets(session, credits)
    repository.add_events(session, history)
    repository.mark_processed(session, applied.sign_ins, now=now)
    applied.rewards_earned = len(earned)
    applied.history_events = len(history)
    return applied


def reward_claimed_event(
    *,
    user_id: int,
    quest_id: int,
    at: datetime,
    completion_no: int,
    reward_item: str,
    reward_qty: int,
    auto_claim: bool,
    user_reward_id: int | None = None,
    sign_in_id: int | None = None,
) -> dict[str, Any]:
    """The history entry of a reward credited to the wallet, for every path that credits
    one: a claim, an auto-claim quest completed by a sign-in (which knows its sign-in,
    not yet its reward row), and waiting rewards settled when a quest turns auto-claim."""
    data: dict[str, Any] = {}
    if user_reward_id is not None:
        data["user_reward_id"] = user_reward_id
    if sign_in_id is not None:
        data["sign_in_id"] = sign_in_id
    data.update(completion_no=completion_no, reward_item=reward_item, reward_qty=reward_qty)
    if auto_claim:
        data["auto_claim"] = True
    return {
        "user_id": user_id,
        "type": EventType.REWARD_CLAIMED,
        "quest_id": quest_id,
        "created_at": at,
        "data": data,
    }
