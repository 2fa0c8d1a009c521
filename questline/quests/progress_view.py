"""What a player sees of their quests (GET /me/quests): v1's fields and v2's.

It reads the active quests (through the process's catalog source: the catalog's cache,
or the copy kept from the catalog's gRPC server), the player's lifetime rows
(user_quest_progress: completions, streaks) of those quests and of the quests they
require, the period rows of the periods holding `now`, and the player's earned rewards.
Every number and the status come from the engine's pure views (questline.engine
quest_view / quest_status) at `now`, with periods counted in the player's current zone.
Nothing here writes.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select, tuple_
from sqlalchemy.orm import Session

from models import UserReward
from models.base import utcnow
from models.progress import RewardStatus
from questline.catalog.source import catalog_source
from questline.engine import (
    Measure,
    PeriodState,
    QuestDef,
    QuestInvalid,
    QuestState,
    parse_quest,
    quest_period,
    quest_status,
    quest_view,
    requirements_met,
)
from questline.quests import repository
from questline.quests.rules import quest_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EarnedRewards:
    """A player's rewards of one quest at `now`: claimed, claimable (waiting and not
    expired), and when the oldest claimable one (the next a claim takes) expires."""

    claimed: int = 0
    claimable: int = 0
    expires_at: datetime | None = None


NONE_EARNED = EarnedRewards()


def my_quests(
    session: Session, *, user_id: int, user_tz: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    """One item per active quest, started or not, ordered by quest_id, as the player sees
    it at `now` (default: the current time) in their zone `user_tz`."""
    now = utcnow() if now is None else now
    # Through the process's catalog source: the database, or the catalog's gRPC server.
    quests = _definitions(catalog_source().quest_views(session))
    states = _states(session, user_id, [quest for _, quest in quests], now=now, user_tz=user_tz)
    earned = earned_rewards(session, user_id, now=now)
    return [
        _item(view, quest, states, earned.get(quest.quest_id, NONE_EARNED), now, user_tz)
        for view, quest in quests
    ]


def _definitions(views: Sequence[Mapping[str, Any]]) -> list[tuple[Mapping[str, Any], QuestDef]]:
    """The engine's definition of each quest view (a view is the form parse_quest reads).
    A stored quest the engine refuses counts nothing (the workers dead-letter its events),
    so it is left out rather than shown with made-up numbers."""
    quests = []
    for view in views:
        try:
            quests.append((view, parse_quest(view)))
        except QuestInvalid as exc:
            log.error("quest %s is invalid and not shown: %s", view.get("quest_id"), exc.detail)
    return quests


def _states(
    session: Session,
    user_id: int,
    quests: Sequence[QuestDef],
    *,
    now: datetime,
    user_tz: str,
) -> dict[int, QuestState]:
    """The player's state on these quests and on the quests they require, with the period
    rows of the periods holding `now` (consecutive quests keep no period rows)."""
    wanted = {q.quest_id for q in quests} | {r for q in quests for r in q.requires}
    lifetime = repository.read_lifetime(session, {(user_id, q) for q in wanted})
    periods = repository.read_periods(
        session,
        {
            (user_id, q.quest_id, quest_period(q, now, user_tz).key)
            for q in quests
            if q.measure is not Measure.CONSECUTIVE
        },
    )
    by_quest: dict[int, dict[str, PeriodState]] = {}
    for (_, quest_id, key), row in periods.items():
        by_quest.setdefault(quest_id, {})[key] = PeriodState(row.progress, row.completions)
    return {
        q: quest_state(lifetime.get((user_id, q)), by_quest.get(q, {})) for q in sorted(wanted)
    }


def _item(
    view: Mapping[str, Any],
    quest: QuestDef,
    states: Mapping[int, QuestState],
    earned: EarnedRewards,
    now: datetime,
    user_tz: str,
) -> dict[str, Any]:
    state = states[quest.quest_id]
    seen = quest_view(quest, state, now=now, user_tz=user_tz)
    status = quest_status(
        quest,
        state,
        now=now,
        user_tz=user_tz,
        claimable=earned.claimable,
        unlocked=requirements_met(quest, states),
    )
    reward = view["reward"]
    return {
        "quest_id": quest.quest_id,
        "name": view["name"],
        "streak": quest.target,
        "duplication": quest.duplication,
        "auto_claim": quest.auto_claim,
        "reward": {"reward_item": reward["reward_item"], "reward_qty": reward["reward_qty"]},
        "curr_streak": _number(seen.curr_streak),
        "completions": state.completions,
        "claimed": earned.claimed,
        "claimable": earned.claimable,
        "status": status.value,
        "target": quest.target,
        "measure": quest.measure.value,
        "period": quest.period.value,
        "progress": _number(seen.progress),
        "completions_this_period": seen.completions_this_period,
        "period_ends_at": seen.period_ends_at,
        "best_streak": seen.best_streak,
        "rewards": [{"item": line.item, "qty": line.qty} for line in quest.rewards],
        "expires_at": earned.expires_at,
    }


def _number(amount: Decimal) -> int | float:
    """An amount as a JSON number: whole amounts (every count) as integers."""
    return int(amount) if amount == amount.to_integral_value() else float(amount)


# --- queries --------------------------------------------------------------------


def earned_rewards(session: Session, user_id: int, *, now: datetime) -> dict[int, EarnedRewards]:
    """quest_id -> the player's rewards of that quest at `now` (quests with none are left
    out). A waiting reward past its expires_at is expired, whether or not a claim has
    stored that status yet."""
    r = UserReward
    claimable = and_(
        r.status == RewardStatus.NOT_CLAIMED, or_(r.expires_at.is_(None), r.expires_at > now)
    )
    counts = session.execute(
        select(
            r.quest_id,
            func.count().filter(r.status == RewardStatus.CLAIMED),
            func.count().filter(claimable),
            func.min(r.completion_no).filter(claimable),
        )
        .where(r.user_id == user_id)
        .group_by(r.quest_id)
    ).all()
    oldest = [(quest_id, first) for quest_id, _, _, first in counts if first is not None]
    expiry: dict[int, datetime | None] = {}
    if oldest:
        rows = session.execute(
            select(r.quest_id, r.expires_at).where(
                r.user_id == user_id, tuple_(r.quest_id, r.completion_no).in_(oldest)
            )
        ).all()
        expiry = {row.quest_id: row.expires_at for row in rows}
    return {
        quest_id: EarnedRewards(int(claimed), int(waiting), expiry.get(quest_id))
        for quest_id, claimed, waiting, _ in counts
    }
