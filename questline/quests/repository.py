"""Queries on progress, earned rewards, events and idempotency keys.

Lock order, everywhere: input events (sign-ins, gameplay events), then the catalog
version (shared), then lifetime progress rows by (user_id, quest_id), then their
period rows, then earned rewards, then users, then wallets by (user_id, item).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from sqlalchemy import Row, Table, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import (
    Base,
    Event,
    EventType,
    IdempotencyKey,
    QuestPeriodProgress,
    RewardStatus,
    UserQuestProgress,
    UserReward,
)
from questline.infra import bulk
from questline.quests import live


def _table(model: type[Base]) -> Table:
    return Base.metadata.tables[model.__tablename__]


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# --- the outbox: input events (sign-ins and gameplay events) ---------------

# Rows as the queries below return them.
InputRow = Row[
    int, int, str, datetime | None, str | None, Decimal | None, dict[str, Any] | None, datetime
]


class LifetimeRow(NamedTuple):
    user_id: int
    quest_id: int
    completions: int
    best_streak: int
    streak_periods: list[int]
    streak_completions: int


class PeriodRow(NamedTuple):
    user_id: int
    quest_id: int
    period_key: str
    progress: Decimal
    completions: int


_LIFETIME_COLUMNS = LifetimeRow._fields
_PERIOD_COLUMNS = PeriodRow._fields

# An input waiting to be applied; ix_events_pending_inputs covers the first two.
_PENDING = (Event.occurred_at.is_not(None), Event.processed_at.is_(None))


# What the shell and recompute read of an input (InputRow).
_INPUT_COLUMNS = (
    Event.event_id,
    Event.user_id,
    Event.type,
    Event.occurred_at,
    Event.tz,
    Event.value,
    Event.attrs,
    Event.created_at,
)


def lock_inputs(
    session: Session,
    *,
    event_ids: Sequence[int] | None = None,
    created_before: datetime | None = None,
    limit: int = 1,
    skip_locked: bool = True,
    include_processed: bool = False,
) -> Sequence[InputRow]:
    """Lock live (not dead) inputs not yet processed, in event_id order: event_id, user_id,
    type, occurred_at, tz, value, attrs, created_at. `include_processed` is the test-only
    fault of the idempotency guard's negative control."""
    stmt = (
        select(*_INPUT_COLUMNS)
        .where(Event.occurred_at.is_not(None), Event.dead_at.is_(None))
        .order_by(Event.event_id)
        .limit(limit)
        .with_for_update(skip_locked=skip_locked)
    )
    if not include_processed:
        stmt = stmt.where(Event.processed_at.is_(None))
    if event_ids is not None:
        stmt = stmt.where(Event.event_id.in_(event_ids))
    if created_before is not None:
        stmt = stmt.where(Event.created_at < created_before)
    return session.execute(stmt).all()


def mark_processed(session: Session, event_ids: Iterable[int], *, now: datetime) -> None:
    session.execute(
        update(Event).where(Event.event_id.in_(list(event_ids))).values(processed_at=now)
    )


def record_failure(
    session: Session, event_ids: Sequence[int], *, error: str, max_attempts: int, now: datetime
) -> None:
    """Count a failed attempt; at max_attempts the event goes to the dead-letter state.

    A dead event is left as it is: two attempts that failed at once must not push
    it past max_attempts or move its dead_at.
    """
    live = (Event.event_id.in_(event_ids), Event.processed_at.is_(None), Event.dead_at.is_(None))
    session.execute(
        update(Event).where(*live).values(attempts=Event.attempts + 1, last_error=error[:2000])
    )
    session.execute(update(Event).where(*live, Event.attempts >= max_attempts).values(dead_at=now))


def list_unprocessed(session: Session, *, limit: int, dead_only: bool = False) -> Sequence[Event]:
    """Inputs not processed yet, pending or dead, oldest first; with `dead_only`, the dead
    letters alone."""
    stmt = select(Event).where(*_PENDING)
    if dead_only:
        stmt = stmt.where(Event.dead_at.is_not(None))
    return session.scalars(stmt.order_by(Event.event_id).limit(limit)).all()


def revive(session: Session, event_id: int) -> bool:
    """Take an input out of the dead-letter state; False if it is not an unprocessed input."""
    result = session.execute(
        update(Event)
        .where(Event.event_id == event_id, *_PENDING)
        .values(dead_at=None, attempts=0, last_error=None)
        .returning(Event.event_id)
    )
    return result.scalar_one_or_none() is not None


def outbox_stats(session: Session) -> tuple[int, int, datetime | None]:
    """(pending, dead, created_at of the oldest pending) over unprocessed inputs."""
    row = session.execute(
        select(
            func.count().filter(Event.dead_at.is_(None)),
            func.count().filter(Event.dead_at.is_not(None)),
            func.min(Event.created_at).filter(Event.dead_at.is_(None)),
        ).where(*_PENDING)
    ).one()
    return int(row[0]), int(row[1]), row[2]


# --- quest state: lifetime rows (the lock) and period rows ------------------

_LIFETIME = (
    UserQuestProgress.user_id,
    UserQuestProgress.quest_id,
    UserQuestProgress.completions,
    UserQuestProgress.best_streak,
    UserQuestProgress.streak_periods,
    UserQuestProgress.streak_completions,
)


def lock_lifetime(
    session: Session, pairs: Collection[tuple[int, int]], *, now: datetime
) -> dict[tuple[int, int], LifetimeRow]:
    """Create missing (user_id, quest_id) lifetime rows, then lock them all in
    (user_id, quest_id) order; the rows by pair."""
    ordered = sorted(set(pairs))
    if not ordered:
        return {}
    bulk.insert_rows(
        session,
        _table(UserQuestProgress),
        [
            {
                "user_id": u,
                "quest_id": q,
                "completions": 0,
                "best_streak": 0,
                "streak_periods": [],
                "streak_completions": 0,
                "updated_at": now,
            }
            for u, q in ordered
        ],
        conflict=("user_id", "quest_id"),
    )
    rows = bulk.select_rows(
        session,
        _table(UserQuestProgress),
        ("user_id", "quest_id"),
        ordered,
        _LIFETIME_COLUMNS,
        for_update=True,
    )
    return {(r[0], r[1]): LifetimeRow(*r) for r in rows}


def read_lifetime(
    session: Session, pairs: Collection[tuple[int, int]], *, for_share: bool = False
) -> dict[tuple[int, int], LifetimeRow]:
    """Lifetime rows of these (user_id, quest_id) pairs that exist, without creating any;
    `for_share` share-locks them (PostgreSQL) so no writer changes them meanwhile."""
    if not pairs:
        return {}
    stmt = (
        select(*_LIFETIME)
        .where(tuple_(UserQuestProgress.user_id, UserQuestProgress.quest_id).in_(sorted(pairs)))
        .order_by(UserQuestProgress.user_id, UserQuestProgress.quest_id)
    )
    if for_share and session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True)
    return {(r.user_id, r.quest_id): LifetimeRow(*r) for r in session.execute(stmt)}


def save_lifetime(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Write lifetime rows by primary key (user_id, quest_id), one statement."""
    bulk.update_rows(session, _table(UserQuestProgress), ("user_id", "quest_id"), rows)


def read_periods(
    session: Session, keys: Collection[tuple[int, int, str]]
) -> dict[tuple[int, int, str], PeriodRow]:
    """Period rows (progress, completions) of these (user_id, quest_id, period_key)."""
    if not keys:
        return {}
    rows = bulk.select_rows(
        session,
        _table(QuestPeriodProgress),
        ("user_id", "quest_id", "period_key"),
        keys,
        _PERIOD_COLUMNS,
    )
    return {(r[0], r[1], r[2]): PeriodRow(*r) for r in rows}


def periods_of(
    session: Session, user_id: int, quest_ids: Collection[int]
) -> Sequence[PeriodRow]:
    """Every period row of one user on these quests."""
    p = QuestPeriodProgress
    rows = session.execute(
        select(p.user_id, p.quest_id, p.period_key, p.progress, p.completions)
        .where(p.user_id == user_id, p.quest_id.in_(list(quest_ids)))
        .order_by(p.quest_id, p.period_key)
    )
    return [PeriodRow(*r) for r in rows]


def save_periods(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert or overwrite period rows (user_id, quest_id, period_key, progress,
    completions, updated_at), one statement."""
    bulk.insert_rows(
        session,
        _table(QuestPeriodProgress),
        rows,
        conflict=("user_id", "quest_id", "period_key"),
        set_on_conflict={
            "progress": "excluded.progress",
            "completions": "excluded.completions",
            "updated_at": "excluded.updated_at",
        },
    )


def delete_periods(session: Session, user_id: int, quest_id: int) -> None:
    """Drop every period row of one user on one quest (recompute rewrites them)."""
    session.execute(
        delete(QuestPeriodProgress).where(
            QuestPeriodProgress.user_id == user_id, QuestPeriodProgress.quest_id == quest_id
        )
    )


def processed_inputs(
    session: Session, user_id: int, *, types: Collection[str]
) -> Sequence[InputRow]:
    """A user's applied inputs of these types (as lock_inputs returns them), in
    (occurred_at, event_id) order: the history recompute folds."""
    return session.execute(
        select(*_INPUT_COLUMNS)
        .where(
            Event.user_id == user_id,
            Event.occurred_at.is_not(None),
            Event.processed_at.is_not(None),
            Event.type.in_(list(types)),
        )
        .order_by(Event.occurred_at, Event.event_id)
    ).all()


def users_with_quest_state(session: Session) -> list[int]:
    """Every user with an applied input or a progress row, in user_id order."""
    with_inputs = select(Event.user_id).where(
        Event.occurred_at.is_not(None), Event.processed_at.is_not(None)
    )
    with_progress = select(UserQuestProgress.user_id)
    ids = session.scalars(with_inputs.union(with_progress)).all()
    return sorted(set(ids))


def highest_rewards(session: Session, user_id: int) -> dict[int, int]:
    """quest_id -> the highest completion number the user holds a reward for."""
    rows = session.execute(
        select(UserReward.quest_id, func.max(UserReward.completion_no))
        .where(UserReward.user_id == user_id)
        .group_by(UserReward.quest_id)
    ).all()
    return {int(q): int(n) for q, n in rows}


def _claimable(user_id: int, quest_id: int, now: datetime) -> tuple[Any, ...]:
    # Waiting and not past its expiry: an expired reward is never claimable, whether or
    # not a claim has stored its 'expired' status yet.
    return (
        UserReward.user_id == user_id,
        UserReward.quest_id == quest_id,
        UserReward.status == RewardStatus.NOT_CLAIMED,
        or_(UserReward.expires_at.is_(None), UserReward.expires_at > now),
    )


def lock_oldest_claimable(
    session: Session, user_id: int, quest_id: int, *, now: datetime
) -> UserReward | None:
    """Lock the oldest claimable reward of a user's quest, skipping rows a concurrent
    claim holds (it will take them)."""
    return session.scalars(
        select(UserReward)
        .where(*_claimable(user_id, quest_id, now))
        .order_by(UserReward.completion_no)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).one_or_none()


def count_claimable(session: Session, user_id: int, quest_id: int, *, now: datetime) -> int:
    return int(
        session.scalar(select(func.count()).where(*_claimable(user_id, quest_id, now))) or 0
    )


def list_rewards(session: Session, user_id: int) -> Sequence[UserReward]:
    return session.scalars(
        select(UserReward)
        .where(UserReward.user_id == user_id)
        .order_by(UserReward.user_reward_id.desc())
    ).all()


def list_events(
    session: Session, user_id: int, *, limit: int, before: int | None
) -> Sequence[Event]:
    stmt = select(Event).where(Event.user_id == user_id)
    if before is not None:
        stmt = stmt.where(Event.event_id < before)
    return session.scalars(stmt.order_by(Event.event_id.desc()).limit(limit)).all()


def get_sign_in(session: Session, user_id: int, sign_in_id: int) -> Event | None:
    return session.scalars(
        select(Event).where(
            Event.event_id == sign_in_id,
            Event.user_id == user_id,
            Event.type == EventType.SIGN_IN,
        )
    ).one_or_none()


def add_events(
    session: Session, rows: Sequence[dict[str, Any]], *, returning: bool = False
) -> list[int]:
    """Append history entries (one statement); with `returning`, their event_ids in the
    rows' order (else []). Their players' streams wake after the commit."""
    if not rows:
        return []
    table = _table(Event)
    ids: list[int] = []
    drawn = bulk.next_ids(session, table, "event_id", len(rows)) if returning else None
    if returning and drawn is None:
        # No sequence to draw from (SQLite): the ids the insert returns, in order.
        inserted = session.execute(
            insert(table).returning(table.c.event_id, sort_by_parameter_order=True), list(rows)
        )
        ids = [int(row[0]) for row in inserted]
    else:
        if drawn is not None:
            # Ids drawn first, so that the rows still go in by COPY, in the rows' order.
            ids = drawn
            rows = [{"event_id": i, **row} for i, row in zip(ids, rows, strict=True)]
        bulk.append_rows(session, table, rows)
    live.announce(session, (int(row["user_id"]) for row in rows))
    return ids


def add_earned_rewards(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Insert earned rewards (one statement); their user_reward_ids, in the rows' order."""
    returned = bulk.insert_rows(
        session,
        _table(UserReward),
        rows,
        returning=("user_id", "quest_id", "completion_no", "user_reward_id"),
    )
    ids = {(int(u), int(q), int(n)): int(rid) for u, q, n, rid in returned}
    return [ids[(r["user_id"], r["quest_id"], r["completion_no"])] for r in rows]


# --- idempotency keys -------------------------------------------------------


def reserve_idempotency_key(
    session: Session, user_id: int, key: str, fingerprint: str, *, now: datetime
) -> IdempotencyKey | None:
    """Insert a placeholder for the key; None if this request is first, else the stored row.

    A concurrent first request holds the new row's lock, so a retry waits for it here.
    """
    inserted = session.execute(
        _insert(session, IdempotencyKey)
        .values(
            user_id=user_id,
            key=key,
            fingerprint=fingerprint,
            status_code=0,
            response={},
            created_at=now,
        )
        .on_conflict_do_nothing()
        .returning(IdempotencyKey.key)
    ).scalar_one_or_none()
    if inserted is not None:
        return None
    return session.scalars(
        select(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .execution_options(populate_existing=True)
    ).one()


def store_idempotent_response(
    session: Session, user_id: int, key: str, status_code: int, response: dict[str, Any]
) -> None:
    session.execute(
        update(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .values(status_code=status_code, response=response)
    )


def purge_idempotency_keys(session: Session, *, older_than: datetime, limit: int) -> int:
    """Delete up to `limit` keys stored before `older_than`; how many went."""
    oldest = (
        select(IdempotencyKey.user_id, IdempotencyKey.key)
        .where(IdempotencyKey.created_at < older_than)
        .limit(limit)
    )
    result = session.execute(
        delete(IdempotencyKey).where(tuple_(IdempotencyKey.user_id, IdempotencyKey.key).in_(oldest))
    )
    return int(getattr(result, "rowcount", 0) or 0)


# --- the catalog's auto-claim switch ------------------------------------------


def settle_waiting_rewards(
    session: Session, quest_id: int, *, now: datetime
) -> Sequence[Row[int, int, int, list[dict[str, Any]]]]:
    """Mark every reward of a quest still waiting to be claimed (not expired at `now`)
    claimed; the rows it changed: user_reward_id, user_id, completion_no, items."""
    waiting = (
        UserReward.quest_id == quest_id,
        UserReward.status == RewardStatus.NOT_CLAIMED,
        or_(UserReward.expires_at.is_(None), UserReward.expires_at > now),
    )
    return session.execute(
        update(UserReward)
        .where(*waiting)
        .values(status=RewardStatus.CLAIMED, claimed_at=now)
        .returning(
            UserReward.user_reward_id,
            UserReward.user_id,
            UserReward.completion_no,
            UserReward.items,
        )
    ).all()
