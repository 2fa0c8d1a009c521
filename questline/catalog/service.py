"""Catalog reads (through the cache) and admin writes. Never commits.

Every write bumps the catalog version in its transaction (cache.catalog_changed),
so reads through any cache see it as soon as it commits."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import Quest, Reward
from models.base import utcnow
from questline.catalog import cache, repository
from questline.errors import Conflict, Invalid, NotFound
from questline.quests import repository as quests_repository
from questline.quests.rules import reward_claimed_event
from questline.users import repository as users_repository


def reward_view(reward: Reward) -> dict[str, Any]:
    return {
        "reward_id": reward.reward_id,
        "reward_name": reward.reward_name,
        "reward_item": reward.reward_item,
        "reward_qty": reward.reward_qty,
    }


def quest_view(quest: Quest) -> dict[str, Any]:
    return {
        "quest_id": quest.quest_id,
        "name": quest.name,
        "description": quest.description,
        "auto_claim": quest.auto_claim,
        "streak": quest.streak,
        "duplication": quest.duplication,
        "active": quest.active,
        "reward": reward_view(quest.reward),
    }


def list_quests(session: Session) -> list[dict[str, Any]]:
    """Active quests ordered by quest_id."""
    return list(
        cache.cached(
            session, "quests", lambda: [quest_view(q) for q in repository.list_quests(session)]
        )
    )


def get_quest(session: Session, quest_id: int) -> dict[str, Any]:
    def load() -> dict[str, Any] | None:
        quest = repository.get_quest(session, quest_id)
        return None if quest is None else quest_view(quest)

    view = cache.cached(session, f"quest:{quest_id}", load)
    if view is None:
        raise NotFound("quest not found")
    return dict(view)


def list_rewards(session: Session) -> list[dict[str, Any]]:
    return list(
        cache.cached(
            session, "rewards", lambda: [reward_view(r) for r in repository.list_rewards(session)]
        )
    )


def get_reward(session: Session, reward_id: int) -> dict[str, Any]:
    def load() -> dict[str, Any] | None:
        reward = repository.get_reward(session, reward_id)
        return None if reward is None else reward_view(reward)

    view = cache.cached(session, f"reward:{reward_id}", load)
    if view is None:
        raise NotFound("reward not found")
    return dict(view)


def create_reward(
    session: Session, *, reward_name: str, reward_item: str, reward_qty: int
) -> Reward:
    reward = Reward(reward_name=reward_name, reward_item=reward_item, reward_qty=reward_qty)
    session.add(reward)
    session.flush()
    cache.catalog_changed(session)
    return reward


def create_quest(session: Session, **fields: Any) -> Quest:
    """Create a quest; Invalid for an unknown reward, Conflict for a taken name."""
    if repository.get_reward(session, fields["reward_id"]) is None:
        raise Invalid("reward_id does not name a reward")
    if repository.get_quest_by_name(session, fields["name"]) is not None:
        raise Conflict("quest name already taken")
    quest = Quest(**fields)
    session.add(quest)
    _flush_unique_name(session)
    cache.catalog_changed(session)
    return quest


def update_quest(session: Session, quest_id: int, **changes: Any) -> Quest:
    """Change a quest. Lowering duplication below what a user has completed is a Conflict."""
    quest = repository.get_quest(session, quest_id, for_update=True)
    if quest is None:
        raise NotFound("quest not found")
    if "reward_id" in changes and repository.get_reward(session, changes["reward_id"]) is None:
        raise Invalid("reward_id does not name a reward")
    if "name" in changes and changes["name"] != quest.name:
        if repository.get_quest_by_name(session, changes["name"]) is not None:
            raise Conflict("quest name already taken")
    if "duplication" in changes:
        done = repository.max_completions(session, quest_id)
        if changes["duplication"] < done:
            raise Conflict(f"duplication cannot go below {done}: a user has completed it so often")
    settle = changes.get("auto_claim") is True and not quest.auto_claim
    for field, value in changes.items():
        setattr(quest, field, value)
    _flush_unique_name(session)
    if settle:
        _credit_waiting_rewards(session, quest_id)
    cache.catalog_changed(session)
    session.refresh(quest)
    return quest


def _credit_waiting_rewards(session: Session, quest_id: int) -> None:
    """A quest switched to auto-claim credits the rewards still waiting to be claimed:
    the contract says an auto-claim quest never has anything claimable.

    The quest row is locked FOR UPDATE, so no worker applies a sign-in meanwhile;
    wallets are updated in user_id order, as everywhere else.
    """
    now = utcnow()
    settled = quests_repository.settle_unclaimed(session, quest_id, now=now)
    if not settled:
        return
    credits: dict[int, dict[str, int]] = defaultdict(lambda: {"gold": 0, "diamond": 0})
    for row in settled:
        credits[row.user_id][row.reward_item] += row.reward_qty
    users_repository.credit_wallets(session, credits)
    quests_repository.add_events(
        session,
        [
            reward_claimed_event(
                user_id=row.user_id,
                quest_id=quest_id,
                at=now,
                user_reward_id=row.user_reward_id,
                completion_no=row.completion_no,
                reward_item=row.reward_item,
                reward_qty=row.reward_qty,
                auto_claim=True,
            )
            for row in sorted(settled, key=lambda r: r.user_reward_id)
        ],
    )


def _flush_unique_name(session: Session) -> None:
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("quest name already taken") from None
