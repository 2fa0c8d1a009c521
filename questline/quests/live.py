"""Live updates: what a player's stream (GET /me/stream) reads, and the message that
wakes it.

Every write of a history item (a sign-in stored, a gameplay event stored, a worker's
quest progress and rewards, a claim) queues `LiveUpdate(user_ids)` on its session
(`announce`); after the commit the one after-commit hook sends it (Redis pub/sub, or
in-process in the embedded mode: workers/publish.py). A stream never trusts the
message: it reads the items from the database by event_id > the last one it sent, so a
lost message only delays, and a resumed stream (Last-Event-ID) has no gap.

Commit order is not event_id order on PostgreSQL: two transactions writing items of one
player (two sign-ins, a drain and a claim) take their ids from the sequence in one
order and may commit in the other. A reader that sent id 101 and moved its cursor past
it would never see 100 when that commits a moment later. So a stream sends an item only
once every transaction writing the events table when the item was first read has
ended (`settle`): PostgreSQL's snapshot, pg_locks and pg_stat_activity say which ones
those are, and nothing is written to find out. Writers that could hold a sequence
number without a transaction id yet are given one first
(questline.events.repository.insert_new). On SQLite every write takes the database's
write lock, so ids are taken in commit order and nothing is held back.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import Text, and_, func, or_, select, text
from sqlalchemy.orm import Session

from models import Event, User
from models.users import UserStatus
from questline.infra.after_commit import after_commit

log = logging.getLogger(__name__)

# Items read at once; a longer replay reads page after page.
PAGE = 200
# The longest a stream holds an item back for a transaction still running. Questline's
# own writers commit in milliseconds; a transaction open this long is someone else's
# (an idle session, a long report) and must not silence every stream: past this the
# item goes, and only a writer slower than this could still precede it.
MAX_HOLD_SECONDS = 10.0
# Users checked in one statement by the periodic re-check of all open streams.
CHECK_CHUNK = 500


@dataclass(frozen=True)
class LiveUpdate:
    """These players' streams have something to read: new history items, or a ban."""

    user_ids: tuple[int, ...]


def announce(session: Session, user_ids: Iterable[int]) -> None:
    """Wake these players' open streams once the session's transaction commits."""
    ids = tuple(sorted(set(user_ids)))
    if ids:
        after_commit(session, LiveUpdate(ids))


def channel(redis_url: str) -> str:
    """The Redis pub/sub channel of LiveUpdate messages. Channels are shared by every
    database number of a Redis server: the number is in the name, so deployments (or
    test runs) on other numbers never wake these streams."""
    db = urlparse(redis_url).path.strip("/") or "0"
    return f"questline:{db}:live"


def encode(user_ids: Iterable[int]) -> str:
    """A pub/sub message body: the user ids, comma-separated."""
    return ",".join(str(u) for u in user_ids)


def decode(body: str | bytes) -> list[int]:
    """The user ids of a pub/sub message body; nothing for a malformed one."""
    text_body = body.decode() if isinstance(body, bytes) else body
    try:
        return [int(part) for part in text_body.split(",") if part]
    except ValueError:
        log.warning("ignored a malformed live-update message %r", text_body[:100])
        return []


# In-process delivery (the embedded mode, where there is no Redis): each open-stream
# hub of this process registers a callback, which must return at once (it runs in the
# committing thread).
_local: set[Callable[[tuple[int, ...]], None]] = set()
_local_lock = threading.Lock()


def listen_locally(callback: Callable[[tuple[int, ...]], None]) -> None:
    with _local_lock:
        _local.add(callback)


def stop_listening_locally(callback: Callable[[tuple[int, ...]], None]) -> None:
    with _local_lock:
        _local.discard(callback)


def deliver_locally(update: LiveUpdate) -> None:
    """Hand a committed update to this process's hubs (the embedded mode's sender)."""
    with _local_lock:
        callbacks = list(_local)
    for callback in callbacks:
        callback(update.user_ids)


@dataclass(frozen=True)
class Snapshot:
    """What a PostgreSQL snapshot says of the transactions with an id: `running`, those
    still in progress (in every database of the server), and `writers`, those of them
    in this database, the only ones that can write history items."""

    running: frozenset[int]
    writers: frozenset[int]

    @classmethod
    def parse(cls, snapshot: str, writers: Iterable[str | int] = ()) -> Snapshot:
        """From pg_current_snapshot()'s text form, `xmin:xmax:xip,xip,...`, and the
        ids of this database's running transactions."""
        xip = snapshot.split(":")[2]
        return cls(frozenset(int(x) for x in xip.split(",") if x), frozenset(map(int, writers)))


@dataclass(frozen=True)
class HeldBack:
    """Items a stream has read but may not send yet: those up to event `upto`, first
    read (at monotonic time `since`) while the transactions `writers` were running."""

    writers: frozenset[int]
    upto: int
    since: float


def settle(
    ids: Sequence[int], snapshot: Snapshot | None, held: HeldBack | None, *, now: float
) -> tuple[int, HeldBack | None]:
    """How many of the ids read (ascending, all after the stream's cursor) may be sent
    now, and what stays held back.

    An id may be sent when no transaction that could still commit a smaller id of the
    player is running: any such transaction took its id before this item's, so it was
    one of the database's writers running when the item was first read. Items go once
    none of those is running any more (a later snapshot no longer lists them), or at
    once when no writer runs. No snapshot (SQLite): all. Held longer than
    MAX_HOLD_SECONDS, they go anyway.
    """
    if snapshot is None:
        return len(ids), None
    upto = 0
    if held is not None and (
        not held.writers & snapshot.running or now - held.since >= MAX_HOLD_SECONDS
    ):
        upto, held = held.upto, None
    if held is None and not snapshot.writers:
        return len(ids), None
    ready = 0
    while ready < len(ids) and ids[ready] <= upto:
        ready += 1
    if ready < len(ids) and held is None:
        held = HeldBack(writers=snapshot.writers, upto=ids[-1], since=now)
    return ready, held


@dataclass
class Read:
    """One read of a stream: the items after its cursor, whether the player is banned,
    and the snapshot they were read in (None on SQLite)."""

    items: list[Event]
    banned: bool
    snapshot: Snapshot | None


def read_after(session: Session, *, user_id: int, after: int, limit: int = PAGE) -> Read:
    """The player's history items after event `after`, oldest first, and the player's
    ban status; on PostgreSQL, when there are items, which transactions the stream must
    wait for before sending them (`writers`, see _WRITERS)."""
    postgres = session.get_bind().dialect.name == "postgresql"
    query = (
        select(Event)
        .where(Event.user_id == user_id, Event.event_id > after)
        .order_by(Event.event_id)
        .limit(limit)
    )
    if postgres:
        # The read's own snapshot, from the same statement: the transactions it could
        # not see are exactly those running when the items were read.
        query = query.add_columns(func.pg_current_snapshot().cast(Text))
    rows: list[Any] = list(session.execute(query).all())
    items = [row[0] for row in rows]
    status = session.scalar(select(User.status).where(User.user_id == user_id))
    banned = status is None or status == UserStatus.BANNED
    snapshot = None
    if items and postgres:
        current, writers = session.execute(_WRITERS, {"read": rows[0][1]}).one()
        snapshot = Snapshot.parse(current, writers)
    return Read(items, banned, snapshot)


# Which transactions a read must wait for: those running at the read's snapshot that
# write the events table now (an INSERT takes the table's RowExclusiveLock before it
# takes ids from the sequence, and keeps it to the end: only they can hold an event_id
# the read could not see; a drain that has not written its history yet, or a
# transaction of another database, holds none and is not waited for), and those that
# have ended since the read (they may have committed items the read missed: the
# stream must read again before it sends). Matched on the low 32 bits of the 64-bit
# ids: pg_stat_activity shows 32-bit ones. With the current snapshot, whose running
# transactions say when the wait is over.
_WRITERS = text(
    """
    SELECT pg_current_snapshot()::text,
           ARRAY(SELECT x::text FROM pg_snapshot_xip(CAST(:read AS pg_snapshot)) AS x
                 WHERE (x::text::numeric % 4294967296)::bigint IN (
                     SELECT a.backend_xid::text::bigint
                     FROM pg_locks AS l JOIN pg_stat_activity AS a ON a.pid = l.pid
                     WHERE l.locktype = 'relation' AND l.relation = 'events'::regclass
                       AND l.database = (SELECT oid FROM pg_database
                                         WHERE datname = current_database())
                       AND l.mode = 'RowExclusiveLock' AND l.granted
                       AND a.backend_xid IS NOT NULL)
                    OR (x::text::numeric % 4294967296)::bigint NOT IN (
                     SELECT a.backend_xid::text::bigint FROM pg_stat_activity AS a
                     WHERE a.backend_xid IS NOT NULL))
    """
)


def running_transactions(session: Session) -> frozenset[int]:
    """The ids of the transactions running now (PostgreSQL), for streams that hold
    items back until some of them end."""
    return Snapshot.parse(str(session.scalar(text("SELECT pg_current_snapshot()::text")))).running


def newest_event_id(session: Session, *, user_id: int) -> int:
    """The player's newest history item (0 when none): where a stream without a
    starting point begins."""
    newest = session.scalar(select(func.max(Event.event_id)).where(Event.user_id == user_id))
    return int(newest or 0)


def needs_attention(session: Session, cursors: Mapping[int, int]) -> set[int]:
    """Of the players with open streams (user_id -> the stream's last event id), those
    with an item after it or banned: the periodic re-check of every stream of a process
    in a few statements, whatever the number of streams."""
    found: set[int] = set()
    users = sorted(cursors)
    for start in range(0, len(users), CHECK_CHUNK):
        chunk = users[start : start + CHECK_CHUNK]
        news = select(Event.user_id).where(
            or_(*(and_(Event.user_id == u, Event.event_id > cursors[u]) for u in chunk))
        )
        found.update(int(u) for u in session.scalars(news.distinct()))
        found.update(int(u) for u in session.scalars(_banned(chunk)))
    return found


def _banned(user_ids: Collection[int]) -> Any:
    return select(User.user_id).where(
        User.user_id.in_(user_ids), User.status == UserStatus.BANNED
    )
