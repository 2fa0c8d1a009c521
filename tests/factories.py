"""Real rows for tests that need a player, a quest or sign-ins without going through
HTTP (and without one argon2 hash per player): users, tokens, catalog, outbox events."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from itertools import count
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Event, EventType, Quest, Reward, User, UserQuestProgress, UserReward
from models.base import utcnow
from questline import security

PASSWORD = "correct-horse-battery"
_names = count(1)


@lru_cache
def password_hash() -> str:
    """One argon2 hash of PASSWORD, shared by every user these factories create."""
    return security.hash_password(PASSWORD)


def add_user(session: Session, name: str | None = None, **columns: Any) -> User:
    """A user who can log in with PASSWORD; flushed, not committed."""
    user = User(
        user_name=name or f"row-player{next(_names)}", password_hash=password_hash(), **columns
    )
    session.add(user)
    session.flush()
    return user


def bearer(user_id: int, role: str = "player") -> dict[str, str]:
    """Headers with a real access token, minted with the auth service's key."""
    token, _ttl = security.mint_access_token(user_id, role)
    return {"Authorization": f"Bearer {token}"}


def add_reward(session: Session, item: str = "gold", qty: int = 5, name: str = "") -> Reward:
    reward = Reward(reward_name=name or f"{qty} {item}", reward_item=item, reward_qty=qty)
    session.add(reward)
    session.flush()
    return reward


def add_quest(
    session: Session,
    *,
    streak: int,
    duplication: int,
    auto_claim: bool = False,
    item: str = "gold",
    qty: int = 5,
    active: bool = True,
    name: str | None = None,
) -> Quest:
    """A quest with its own reward. Catalog readers see it once committed and the
    cache invalidated (questline.catalog.cache.invalidate)."""
    reward = add_reward(session, item, qty)
    quest = Quest(
        name=name or f"quest-{next(_names)}",
        reward_id=reward.reward_id,
        streak=streak,
        duplication=duplication,
        auto_claim=auto_claim,
        active=active,
    )
    session.add(quest)
    session.flush()
    return quest


def add_sign_ins(session: Session, user_id: int, n: int = 1) -> list[int]:
    """n stored, unprocessed sign-in events (outbox rows), as a login would write them."""
    events = [
        Event(user_id=user_id, type=EventType.SIGN_IN, data={"via": "test"}, created_at=utcnow())
        for _ in range(n)
    ]
    session.add_all(events)
    session.flush()
    return [e.event_id for e in events]


def keep_from_sweeper(session: Session, event_ids: list[int]) -> None:
    """Date sign-ins an hour ahead, so that a running worker's sweeper (which takes
    sign-ins older than a second) leaves them to the test that applies them."""
    for event_id in event_ids:
        session.get_one(Event, event_id).created_at = utcnow() + timedelta(hours=1)
    session.flush()


def progress(session: Session, user_id: int, quest_id: int) -> tuple[int, int]:
    """(curr_streak, completions), (0, 0) when the row does not exist yet."""
    row = session.get(UserQuestProgress, (user_id, quest_id), populate_existing=True)
    return (row.curr_streak, row.completions) if row else (0, 0)


def rewards(session: Session, user_id: int, quest_id: int) -> list[UserReward]:
    return list(
        session.scalars(
            select(UserReward)
            .where(UserReward.user_id == user_id, UserReward.quest_id == quest_id)
            .order_by(UserReward.completion_no)
            .execution_options(populate_existing=True)
        )
    )


def events(session: Session, user_id: int, *types: str) -> list[Event]:
    stmt = select(Event).where(Event.user_id == user_id).order_by(Event.event_id)
    if types:
        stmt = stmt.where(Event.type.in_(types))
    return list(session.scalars(stmt.execution_options(populate_existing=True)))
