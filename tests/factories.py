"""Real rows for tests that need a player, a quest or sign-ins without going through
HTTP (and without one argon2 hash per player): users, tokens, catalog, outbox events
(sign-ins and gameplay events), wallets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import count
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from models import (
    Event,
    EventType,
    Quest,
    QuestPeriodProgress,
    Reward,
    User,
    UserQuestProgress,
    UserReward,
    WalletBalance,
)
from models.base import utcnow
from models.catalog import CatalogState
from questline import security
from questline.wallet import repository as wallet

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


def add_reward(
    session: Session,
    item: str = "gold",
    qty: int = 5,
    name: str = "",
    *,
    items: Sequence[tuple[str, int]] = (),
) -> Reward:
    """A reward of `qty` `item`, or of the bundle `items` [(item, qty), ...]."""
    bundle = [{"item": i, "qty": q} for i, q in items] or [{"item": item, "qty": qty}]
    reward = Reward(
        reward_name=name or f"{bundle[0]['qty']} {bundle[0]['item']}",
        reward_item=bundle[0]["item"],
        reward_qty=bundle[0]["qty"],
        items=bundle,
    )
    session.add(reward)
    session.flush()
    return reward


def catalog_changed(session: Session) -> None:
    """Bump the catalog version, as every catalog write does, so that workers reload the
    definitions this test wrote directly."""
    session.execute(update(CatalogState).values(version=CatalogState.version + 1))


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
    """A v1 quest (counts sign-ins) with its own reward. Workers see it once committed
    (the catalog version is bumped); HTTP catalog readers once the cache is invalidated
    (questline.catalog.cache.invalidate)."""
    reward = add_reward(session, item, qty)
    quest = Quest(
        name=name or f"quest-{next(_names)}",
        reward_id=reward.reward_id,
        streak=streak,
        duplication=duplication,
        auto_claim=auto_claim,
        active=active,
        trigger={"event": "sign_in"},
        requires=[],
    )
    session.add(quest)
    session.flush()
    catalog_changed(session)
    return quest


def add_v2_quest(
    session: Session,
    *,
    target: int,
    trigger: Mapping[str, Any],
    items: Sequence[tuple[str, int]] = (("gold", 5),),
    name: str | None = None,
    **columns: Any,
) -> Quest:
    """A quest of any shape, written straight to the catalog tables (the v2 columns as
    keyword arguments: measure, period, timezone, max_per_period, duplication,
    grace_periods, requires, starts_at, ends_at, claim_within_seconds, auto_claim ...).
    Unlike the API, nothing is validated: tests of bad definitions rely on that."""
    reward = add_reward(session, items=items)
    columns.setdefault("duplication", None)
    columns.setdefault("requires", [])
    quest = Quest(
        name=name or f"quest-{next(_names)}",
        reward_id=reward.reward_id,
        streak=target,
        trigger=dict(trigger),
        **columns,
    )
    session.add(quest)
    session.flush()
    catalog_changed(session)
    return quest


def add_sign_ins(session: Session, user_id: int, n: int = 1, *, tz: str = "UTC") -> list[int]:
    """n stored, unprocessed sign-in events (outbox rows), as a login would write them:
    inputs that occurred when they were stored, worth 1."""
    events = []
    for _ in range(n):
        now = utcnow()
        events.append(
            Event(
                user_id=user_id,
                type=EventType.SIGN_IN,
                data={"via": "test"},
                created_at=now,
                occurred_at=now,
                tz=tz,
                value=Decimal(1),
            )
        )
    session.add_all(events)
    session.flush()
    return [e.event_id for e in events]


@dataclass(frozen=True)
class GameEvent:
    """A gameplay event as a game server sends it (POST /events), before it is stored."""

    type: str
    occurred_at: datetime
    value: Decimal | int | str = 1
    attrs: Mapping[str, Any] = field(default_factory=dict)
    tz: str = "UTC"
    idempotency_key: str | None = None


def add_events(session: Session, user_id: int, events: Sequence[GameEvent]) -> list[int]:
    """Store gameplay events as unprocessed inputs, in the given order (their event_ids
    follow it), as ingestion would: occurred_at, tz, value, attrs, idempotency_key."""
    rows = []
    for e in events:
        rows.append(
            Event(
                user_id=user_id,
                type=e.type,
                data={},
                created_at=utcnow(),
                occurred_at=e.occurred_at,
                tz=e.tz,
                value=Decimal(e.value),
                attrs=dict(e.attrs),
                idempotency_key=e.idempotency_key or f"test-{next(_names)}",
            )
        )
    session.add_all(rows)
    session.flush()
    return [r.event_id for r in rows]


def keep_from_sweeper(session: Session, event_ids: list[int]) -> None:
    """Date sign-ins an hour ahead, so that a running worker's sweeper (which takes
    sign-ins older than a second) leaves them to the test that applies them."""
    for event_id in event_ids:
        session.get_one(Event, event_id).created_at = utcnow() + timedelta(hours=1)
    session.flush()


def progress(session: Session, user_id: int, quest_id: int) -> tuple[int, int]:
    """(curr_streak, completions) of a quest without periods: v1's curr_streak is the
    progress of period "". (0, 0) when nothing is stored yet."""
    row = session.get(UserQuestProgress, (user_id, quest_id), populate_existing=True)
    period = session.get(QuestPeriodProgress, (user_id, quest_id, ""), populate_existing=True)
    curr_streak = int(period.progress) if period else 0
    return curr_streak, row.completions if row else 0


def periods(session: Session, user_id: int, quest_id: int) -> dict[str, tuple[Decimal, int]]:
    """period_key -> (progress, completions) of one user on one quest."""
    rows = session.scalars(
        select(QuestPeriodProgress)
        .where(QuestPeriodProgress.user_id == user_id, QuestPeriodProgress.quest_id == quest_id)
        .execution_options(populate_existing=True)
    )
    return {r.period_key: (r.progress, r.completions) for r in rows}


def wallet_of(session: Session, user_id: int) -> dict[str, int]:
    """The user's balances (gold and diamond always present)."""
    return wallet.balances(session, user_id)


def set_balance(session: Session, user_id: int, item: str, balance: int) -> None:
    """Put `balance` of `item` in the wallet directly (no ledger entry)."""
    row = session.get(WalletBalance, (user_id, item))
    if row is None:
        session.add(WalletBalance(user_id=user_id, item=item, balance=balance))
    else:
        row.balance = balance
    session.flush()


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
