"""Queries on progress, earned rewards, events and idempotency keys.

Lock order, everywhere: sign-in events, then quests (shared), then progress rows
by (user_id, quest_id), then earned rewards, then users by user_id; catalog writes
take the catalog version row (catalog_state) last.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import Event, EventType, IdempotencyKey, Quest, Reward, UserQuestProgress, UserReward
from models.progress import RewardStatus


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


# --- the outbox -------------------------------------------------------------


def lock_sign_ins(
    session: Session,
    *,
    event_ids: Sequence[int] | None = None,
    created_before: datetime | None = None,
    limit: int = 1,
    skip_locked: bool = True,
    include_processed: bool = False,
) -> Sequence[Row[int, int, datetime]]:
    """Lock unprocessed, live sign-in events (event_id, user_id, created_at) in id order."""
    stmt = (
        select(Event.event_id, Event.user_id, Event.created_at)
        .where(Event.type == EventType.SIGN_IN, Event.dead_at.is_(None))
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
    """Unprocessed sign-ins, oldest first; with `dead_only`, the dead letters alone."""
    stmt = select(Event).where(Event.type == EventType.SIGN_IN, Event.processed_at.is_(None))
    if dead_only:
        stmt = stmt.where(Event.dead_at.is_not(None))
    return session.scalars(stmt.order_by(Event.event_id).limit(limit)).all()


def revive(session: Session, event_id: int) -> bool:
    """Take an event out of the dead-letter state; False if it is not an unprocessed sign-in."""
    result = session.execute(
        update(Event)
        .where(
            Event.event_id == event_id,
            Event.type == EventType.SIGN_IN,
            Event.processed_at.is_(None),
        )
        .values(dead_at=None, attempts=0, last_error=None)
        .returning(Event.event_id)
    )
    return result.scalar_one_or_none() is not None


def outbox_stats(session: Session) -> tuple[int, int, datetime | None]:
    pending = and_(Event.type == EventType.SIGN_IN, Event.processed_at.is_(None))
    row = session.execute(
        select(
            func.count().filter(Event.dead_at.is_(None)),
            func.count().filter(Event.dead_at.is_not(None)),
            func.min(Event.created_at).filter(Event.dead_at.is_(None)),
        ).where(pending)
    ).one()
    return int(row[0]), int(row[1]), row[2]


# --- quests and progress ----------------------------------------------------


def active_quest_rules(session: Session) -> Sequence[Row[int, int, int, bool, str, int]]:
    """Active quests with their reward, read from the database and share-locked so a
    catalog write cannot slip between reading a limit and granting against it."""
    stmt = (
        select(
            Quest.quest_id,
            Quest.streak,
            Quest.duplication,
            Quest.auto_claim,
            Reward.reward_item,
            Reward.reward_qty,
        )
        .join(Reward, Reward.reward_id == Quest.reward_id)
        .where(Quest.active.is_(True))
        .order_by(Quest.quest_id)
    )
    if session.get_bind().dialect.name == "postgresql":
        stmt = stmt.with_for_update(read=True, of=Quest)
    return session.execute(stmt).all()


def lock_progress(
    session: Session, user_ids: Sequence[int], quest_ids: Sequence[int], *, now: datetime
) -> dict[tuple[int, int], UserQuestProgress]:
    """Create missing progress rows, then lock them all in (user_id, quest_id) order."""
    pairs = sorted((u, q) for u in set(user_ids) for q in quest_ids)
    if not pairs:
        return {}
    # Parameters as a list (executemany) rather than one literal multi-row VALUES:
    # the statement compiles once and is cached, instead of once per batch.
    session.execute(
        _insert(session, UserQuestProgress).on_conflict_do_nothing(),
        [
            {"user_id": u, "quest_id": q, "curr_streak": 0, "completions": 0, "updated_at": now}
            for u, q in pairs
        ],
    )
    rows = session.scalars(
        select(UserQuestProgress)
        .where(tuple_(UserQuestProgress.user_id, UserQuestProgress.quest_id).in_(pairs))
        .order_by(UserQuestProgress.user_id, UserQuestProgress.quest_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {(p.user_id, p.quest_id): p for p in rows}


def progress_for_user(session: Session, user_id: int) -> dict[int, UserQuestProgress]:
    rows = session.scalars(
        select(UserQuestProgress).where(UserQuestProgress.user_id == user_id)
    ).all()
    return {p.quest_id: p for p in rows}


def reward_counts(session: Session, user_id: int) -> dict[tuple[int, RewardStatus], int]:
    """(quest_id, status) -> number of earned rewards."""
    rows = session.execute(
        select(UserReward.quest_id, UserReward.status, func.count())
        .where(UserReward.user_id == user_id)
        .group_by(UserReward.quest_id, UserReward.status)
    ).all()
    return {(q, RewardStatus(s)): n for q, s, n in rows}


def lock_oldest_unclaimed(session: Session, user_id: int, quest_id: int) -> UserReward | None:
    return session.scalars(
        select(UserReward)
        .where(
            UserReward.user_id == user_id,
            UserReward.quest_id == quest_id,
            UserReward.status == RewardStatus.NOT_CLAIMED,
        )
        .order_by(UserReward.completion_no)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).one_or_none()


def count_unclaimed(session: Session, user_id: int, quest_id: int) -> int:
    return int(
        session.scalar(
            select(func.count()).where(
                UserReward.user_id == user_id,
                UserReward.quest_id == quest_id,
                UserReward.status == RewardStatus.NOT_CLAIMED,
            )
        )
        or 0
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


def add_events(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Append history entries (one executemany)."""
    if rows:
        session.execute(insert(Event), rows)


def add_earned_rewards(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Insert earned rewards (one executemany)."""
    if rows:
        session.execute(insert(UserReward), rows)


def settle_unclaimed(
    session: Session, quest_id: int, *, now: datetime
) -> Sequence[Row[int, int, int, str, int]]:
    """Mark every waiting reward of a quest claimed; the rows it changed (user_reward_id,
    user_id, completion_no, reward_item, reward_qty)."""
    return session.execute(
        update(UserReward)
        .where(UserReward.quest_id == quest_id, UserReward.status == RewardStatus.NOT_CLAIMED)
        .values(status=RewardStatus.CLAIMED, claimed_at=now)
        .returning(
            UserReward.user_reward_id,
            UserReward.user_id,
            UserReward.completion_no,
            UserReward.reward_item,
            UserReward.reward_qty,
        )
    ).all()


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
