"""Queries on stored gameplay events (inputs of the events table) and on users' zones."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import Event, User
from questline.quests import live

# (user_id, idempotency_key): what makes a gameplay event unique.
EventKey = tuple[int, str]


def _insert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(Event)


def zones_of(session: Session, user_ids: Collection[int]) -> dict[int, str]:
    """user_id -> IANA zone, for the users that exist."""
    rows = session.execute(
        select(User.user_id, User.timezone).where(User.user_id.in_(sorted(user_ids)))
    )
    return {int(user_id): str(zone) for user_id, zone in rows}


def insert_new(session: Session, rows: Sequence[dict[str, Any]]) -> dict[EventKey, int]:
    """Insert the rows whose (user_id, idempotency_key) is new; their event ids by key.

    One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING (SQLAlchemy sends the
    parameter list as multi-row VALUES). A row whose key a concurrent transaction holds
    waits for it, then is skipped if that transaction commits.
    """
    if not rows:
        return {}
    if session.get_bind().dialect.name == "postgresql":
        # A transaction id before the first sequence number: a live stream holds back
        # a player's later items while this transaction runs (questline.quests.live).
        session.execute(select(func.pg_current_xact_id()))
    stmt = (
        _insert(session)
        .on_conflict_do_nothing(index_elements=["user_id", "idempotency_key"])
        .returning(Event.event_id, Event.user_id, Event.idempotency_key)
    )
    # Through the connection, not the ORM's bulk insert path: same statement, a third
    # of the Python work per row (this is the hottest statement of ingestion).
    stored = {
        (int(user_id), str(key)): int(event_id)
        for event_id, user_id, key in session.connection().execute(stmt, list(rows))
    }
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
