"""Queries on stored gameplay events (inputs of the events table) and on users' zones."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime

import orjson
from sqlalchemy import Row, and_, delete, func, not_, or_, select, tuple_
from sqlalchemy.orm import Session

from models import Base, Event, User, WebhookDelivery
from models.events import WITH_IDEMPOTENCY_KEY
from questline.config import get_settings
from questline.credentials import repository as credentials_repository
from questline.events.validation import NewEvent
from questline.infra import bulk
from questline.quests import live
from questline.webhooks import repository as webhooks_repository

_EVENTS = Base.metadata.tables["events"]

# (user_id, idempotency_key): what makes a gameplay event unique.
EventKey = tuple[int, str]


@dataclass(frozen=True)
class Insertion:
    """What storing a batch found: the event ids of the rows stored (by key); the users
    of the batch that do not exist and whether the API key was live (either way nothing
    is stored)."""

    stored: dict[EventKey, int]
    missing_users: frozenset[int] = frozenset()
    key_live: bool = True


def insert_new(
    session: Session, events: Sequence[NewEvent], *, api_key_id: int, now: datetime
) -> Insertion:
    """Store the events whose (user_id, idempotency_key) is new, each stamped with its
    user's zone as it is now, unless a user is unknown or the key has been revoked.

    On PostgreSQL this is one statement (_INSERT_SQL), the hottest of ingestion: the key
    and user checks, the zones and the insert cost one round trip, not four. A row whose
    key a concurrent transaction holds waits for it, then is skipped if that one commits.
    """
    if not events:
        return Insertion({})
    if session.get_bind().dialect.name == "postgresql":
        insertion = _insert_on_postgresql(session, events, api_key_id=api_key_id, now=now)
    else:
        insertion = _insert_step_by_step(session, events, api_key_id=api_key_id, now=now)
    live.announce(session, (user_id for user_id, _ in insertion.stored))
    return insertion


# The batch travels as one JSON text, decoded by PostgreSQL: quoting 100 rows of 11
# parameters each cost more client CPU than the rest of the request. The INSERT takes
# nothing when the key is revoked or a user is missing; the rows after it say which.
# `pg_current_xact_id()` in the WHERE runs before the first event_id is drawn: the
# ids are the INSERT's defaults, computed over the rows its SELECT returns, and a SELECT
# with ORDER BY (which keeps ids in request order) stays a sorted subquery, so every
# qual has run before the first row comes out. With the table's lock, taken when the
# statement starts, that transaction id makes a live stream hold back a player's later
# items while this transaction runs (questline.quests.live). Prepared once per
# connection: parsing and planning it cost PostgreSQL ~15% of running it.
_PREPARED = "questline_insert_events"
_INSERT_SQL = """
WITH batch AS (
    SELECT * FROM json_to_recordset($1) AS b (
        i int, user_id bigint, type text, occurred_at timestamptz, value numeric,
        attrs jsonb, idempotency_key text)
),
zones AS (
    SELECT user_id, timezone FROM users WHERE user_id IN (SELECT user_id FROM batch)
),
missing AS (
    SELECT DISTINCT user_id FROM batch WHERE user_id NOT IN (SELECT user_id FROM zones)
),
live_key AS (
    SELECT key_id FROM api_keys WHERE key_id = $2 AND revoked_at IS NULL
),
stored AS (
    INSERT INTO events (user_id, type, data, created_at, occurred_at, tz, value, attrs,
                        idempotency_key, api_key_id, attempts)
    SELECT b.user_id, b.type, '{}', $3, b.occurred_at, z.timezone, b.value, b.attrs,
           b.idempotency_key, k.key_id, 0
    FROM batch b JOIN zones z ON z.user_id = b.user_id CROSS JOIN live_key k
    WHERE NOT EXISTS (SELECT FROM missing) AND pg_current_xact_id() IS NOT NULL
    ORDER BY b.i
    ON CONFLICT (user_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
    RETURNING event_id, user_id, idempotency_key
)
SELECT event_id, user_id, idempotency_key FROM stored
UNION ALL SELECT NULL, user_id, NULL FROM missing
UNION ALL SELECT NULL, NULL, NULL WHERE NOT EXISTS (SELECT FROM live_key)
"""


# The same statement sent whole each time, for poolers that do not keep a session's
# prepared statements (settings.database_prepared_statements).
_INSERT_DIRECT = (
    _INSERT_SQL.replace("$1", "CAST(%(batch)s AS json)")
    .replace("$2", "CAST(%(api_key_id)s AS bigint)")
    .replace("$3", "CAST(%(now)s AS timestamptz)")
)


def _insert_on_postgresql(
    session: Session, events: Sequence[NewEvent], *, api_key_id: int, now: datetime
) -> Insertion:
    batch = orjson.dumps(
        [
            {
                "i": i,
                "user_id": e.user_id,
                "type": e.type,
                "occurred_at": e.occurred_at,
                "value": str(e.value),  # as text: a JSON number would pass through a float
                "attrs": e.attrs,
                "idempotency_key": e.idempotency_key,
            }
            for i, e in enumerate(events)
        ]
    ).decode()
    params = {"batch": batch, "api_key_id": api_key_id, "now": now}
    if not get_settings().database_prepared_statements:
        rows = bulk.run_sql(session, _INSERT_DIRECT, params)
    else:
        connection = session.connection()
        if _PREPARED not in connection.info:  # this database connection's own
            connection.exec_driver_sql(
                f"PREPARE {_PREPARED} (json, bigint, timestamptz) AS {_INSERT_SQL}"
            )
            connection.info[_PREPARED] = True
        rows = bulk.run_sql(
            session, f"EXECUTE {_PREPARED} (%(batch)s, %(api_key_id)s, %(now)s)", params
        )
    stored: dict[EventKey, int] = {}
    missing: set[int] = set()
    key_live = True
    for event_id, user_id, key in rows:
        if event_id is not None:
            stored[(int(user_id), str(key))] = int(event_id)
        elif user_id is not None:
            missing.add(int(user_id))
        else:
            key_live = False
    return Insertion(stored, frozenset(missing), key_live)


def _insert_step_by_step(
    session: Session, events: Sequence[NewEvent], *, api_key_id: int, now: datetime
) -> Insertion:
    """The same as _INSERT_SQL in plain statements (SQLite: the embedded mode)."""
    if credentials_repository.live_by_id(session, api_key_id) is None:
        return Insertion({}, key_live=False)
    zones = zones_of(session, {e.user_id for e in events})
    missing = frozenset(e.user_id for e in events if e.user_id not in zones)
    if missing:
        return Insertion({}, missing_users=missing)
    returned = bulk.insert_rows(
        session,
        _EVENTS,
        [
            {
                "user_id": e.user_id,
                "type": e.type,
                "data": {},
                "created_at": now,
                "occurred_at": e.occurred_at,
                "tz": zones[e.user_id],
                "value": e.value,
                "attrs": e.attrs,
                "idempotency_key": e.idempotency_key,
                "api_key_id": api_key_id,
                "attempts": 0,
            }
            for e in events
        ],
        conflict=("user_id", "idempotency_key"),
        conflict_where=str(WITH_IDEMPOTENCY_KEY),
        returning=("event_id", "user_id", "idempotency_key"),
    )
    return Insertion({(int(u), str(k)): int(event_id) for event_id, u, k in returned})


def zones_of(session: Session, user_ids: Collection[int]) -> dict[int, str]:
    """user_id -> IANA zone, for the users that exist."""
    rows = session.execute(
        select(User.user_id, User.timezone).where(User.user_id.in_(sorted(user_ids)))
    )
    return {int(user_id): str(zone) for user_id, zone in rows}


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
