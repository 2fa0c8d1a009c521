"""Queries on stored gameplay events (inputs of the events table) and on users' zones."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, delete, func, not_, or_, select, tuple_
from sqlalchemy.orm import Session

from models import Base, Event, User, WebhookDelivery
from models.events import WITH_IDEMPOTENCY_KEY
from questline.infra import bulk
from questline.quests import live
from questline.webhooks import repository as webhooks_repository

_EVENTS = Base.metadata.tables["events"]

# (user_id, idempotency_key): what makes a gameplay event unique.
EventKey = tuple[int, str]


def zones_of(session: Session, user_ids: Collection[int]) -> dict[int, str]:
    """user_id -> IANA zone, for the users that exist."""
    rows = session.execute(
        select(User.user_id, User.timezone).where(User.user_id.in_(sorted(user_ids)))
    )
    return {int(user_id): str(zone) for user_id, zone in rows}


def insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> dict[EventKey, int]:
    """Insert the rows whose (user_id, idempotency_key) is new; their event ids by key.

    One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING (questline.infra.bulk: the
    hottest statement of ingestion). A row whose key a concurrent transaction holds
    waits for it, then is skipped if that transaction commits.
    """
    if not rows:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        # A transaction id before the first sequence number: a live stream holds back
        # a player's later items while this transaction runs (questline.quests.live).
        session.execute(select(func.pg_current_xact_id()))
    returned = bulk.insert_rows(
        session,
        _EVENTS,
        rows,
        conflict=("user_id", "idempotency_key"),
        conflict_where=str(WITH_IDEMPOTENCY_KEY),
        returning=("event_id", "user_id", "idempotency_key"),
    )
    stored = {(int(user_id), str(key)): int(event_id) for event_id, user_id, key in returned}
    live.announce(session, (user_id for user_id, _ in stored))
    return stored


def ids_by_key(session: Session, keys: Collection[EventKey]) -> dict[EventKey, int]:
    """The event ids of events already stored under these (user_id, idempotency_key)."""
    if not keys:
        return {}
    rows = session.execute(
        select(Event.user_id, Event.idempotency_key, Event.event_id).where(
            tuple_(Event.user_id, Event.idempotency_key).in_(sorted(keys))
        )
    )
    return {(int(user_id), str(key)): int(event_id) for user_id, key, event_id in rows}


InputStatusRow = Row[int, int, str, datetime | None, datetime, datetime | None]


def get_input(session: Session, event_id: int) -> InputStatusRow | None:
    """An input (sign-in or gameplay event; not a history entry): event_id, user_id, type,
    occurred_at, created_at, processed_at."""
    return session.execute(
        select(
            Event.event_id,
            Event.user_id,
            Event.type,
            Event.occurred_at,
            Event.created_at,
            Event.processed_at,
        ).where(Event.event_id == event_id, Event.occurred_at.is_not(None))
    ).one_or_none()


# --- retention (questline.retention) -------------------------------------------------


def first_event_id(session: Session) -> int | None:
    """The lowest event id stored, or None when the table is empty."""
    return session.scalar(select(func.min(Event.event_id)))


def last_event_stored_before(session: Session, before: datetime) -> int | None:
    """About the highest event id stored before `before`, or None if none was.

    Event ids grow with the time rows are stored (a sequence, taken at insert), so a
    binary search on the primary key finds the boundary in a few dozen index lookups,
    with no index on created_at. Near the boundary the order may differ by the length
    of a transaction; callers still test created_at on each row they delete."""
    low = first_event_id(session)
    high = session.scalar(select(func.max(Event.event_id)))
    if low is None or high is None:
        return None

    def stored_at(event_id: int) -> datetime:
        # The first row at or after event_id (ids have gaps).
        found = session.scalar(
            select(Event.created_at)
            .where(Event.event_id >= event_id)
            .order_by(Event.event_id)
            .limit(1)
        )
        assert found is not None
        return found

    if stored_at(low) >= before:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        if stored_at(middle) < before:
            low = middle
        else:
            high = middle - 1
    return low


def delete_old_events(
    session: Session,
    *,
    first_id: int,
    last_id: int,
    before: datetime,
    kept: Sequence[tuple[str, datetime | None, datetime | None]] | None,
) -> int:
    """Delete, among event ids first_id..last_id, the history entries stored before
    `before` and the processed inputs that both occurred and were stored before it,
    except inputs inside a kept window (event type, start, end: occurred_at in
    [start, end), None unbounded). `kept` None keeps every input. How many went."""
    in_range = Event.event_id.between(first_id, last_id)
    history = and_(Event.occurred_at.is_(None), Event.created_at < before)
    old = history
    if kept is not None:
        inputs = and_(
            Event.occurred_at.is_not(None),
            Event.processed_at.is_not(None),
            Event.occurred_at < before,
            Event.created_at < before,
        )
        windows = [
            and_(
                Event.type == event_type,
                *([Event.occurred_at >= start] if start is not None else []),
                *([Event.occurred_at < end] if end is not None else []),
            )
            for event_type, start, end in kept
        ]
        if windows:
            inputs = and_(inputs, not_(or_(*windows)))
        old = or_(history, inputs)
    doomed = select(Event.event_id).where(in_range, old)
    # What announced a doomed entry goes with it once settled; one still pending keeps
    # its entry until the next prune (the foreign key would refuse the delete anyway).
    webhooks_repository.delete_settled_of_events(session, doomed)
    announced = select(WebhookDelivery.delivery_id).where(
        WebhookDelivery.event_id == Event.event_id
    )
    result = session.execute(delete(Event).where(in_range, old, ~announced.exists()))
    return int(getattr(result, "rowcount", 0) or 0)
