"""Queries on stored gameplay events (inputs of the events table) and on users' zones."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from models import Base, Event, User
from models.events import WITH_IDEMPOTENCY_KEY
from questline.infra import bulk

_EVENTS = Base.metadata.tables["events"]

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

    One multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING (questline.infra.bulk: the
    hottest statement of ingestion). A row whose key a concurrent transaction holds
    waits for it, then is skipped if that transaction commits.
    """
    returned = bulk.insert_rows(
        session,
        _EVENTS,
        rows,
        conflict=("user_id", "idempotency_key"),
        conflict_where=str(WITH_IDEMPOTENCY_KEY),
        returning=("event_id", "user_id", "idempotency_key"),
    )
    return {(int(user_id), str(key)): int(event_id) for event_id, user_id, key in returned}


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
