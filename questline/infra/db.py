"""Engine, sessions and transactions, for PostgreSQL and the embedded SQLite file."""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from questline.config import get_settings

_lock = threading.Lock()
_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine tuned for the backend: pooled PostgreSQL, or serialized SQLite writes."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs
        )
        _serialize_sqlite_writes(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    # No ping before each checkout (a round trip per transaction): a connection the server
    # dropped fails its first statement, SQLAlchemy then discards the whole pool, and that
    # one transaction is retried (workers) or answered 503 (APIs), as during any outage.
    kwargs.setdefault("pool_pre_ping", False)
    kwargs.setdefault("pool_recycle", 1800)
    if url.startswith(("postgresql+psycopg2", "postgresql:")):
        # A batch's progress updates go out in pages, not one round trip per row.
        kwargs.setdefault("executemany_mode", "values_plus_batch")
    return create_engine(url, **kwargs)


def _serialize_sqlite_writes(engine: Engine) -> None:
    # SQLite has no row locks: every transaction takes the write lock up front
    # (BEGIN IMMEDIATE), so read-modify-write sequences never interleave.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let us issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def get_engine() -> Engine:
    global _engine, _sessionmaker
    with _lock:
        if _engine is None:
            settings = get_settings()
            if settings.database_url is None:
                settings.data_dir.mkdir(parents=True, exist_ok=True)
            _engine = make_engine(settings.sqlalchemy_url)
            _sessionmaker = sessionmaker(_engine, expire_on_commit=False)
        return _engine


def session_factory() -> sessionmaker[Session]:
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker


def after_fork() -> None:
    """In a forked child: forget the parent's engine and lock without touching them."""
    global _lock, _engine, _sessionmaker
    _lock = threading.Lock()
    if _engine is not None:
        _engine.dispose(close=False)
    _engine = None
    _sessionmaker = None


@contextmanager
def transaction() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    session = session_factory()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


# PostgreSQL SQLSTATEs worth retrying: serialization failure, deadlock,
# and the connection-class errors a restart produces.
_TRANSIENT_SQLSTATES = {"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08003", "08006"}


# Undefined table, undefined column: what a query on a schema without a migration meets.
_MISSING_SQLSTATES = {"42P01", "42703"}
_SQLITE_MISSING = ("no such table", "no such column", "has no column named")


def is_missing_schema_error(exc: BaseException) -> bool:
    """True for a database error that names a table or column the schema lacks."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "pgcode", None) in _MISSING_SQLSTATES:
        return True
    if isinstance(exc.orig, sqlite3.OperationalError):
        message = str(exc.orig)
        return any(part in message for part in _SQLITE_MISSING)
    return False


class TransientError(Exception):
    """A failure that is not the database's but that a retry of the whole transaction
    can cure: a service the transaction needs is away (the catalog's gRPC server)."""


def is_transient(exc: BaseException) -> bool:
    """True for errors that a retry of the whole transaction can cure (TransientError
    and transient database errors). A missing table or column (an unmigrated SQLite
    file raises OperationalError for it) is not: `questline db upgrade` cures it."""
    if isinstance(exc, TransientError):
        return True
    if is_missing_schema_error(exc):
        return False
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        code = getattr(exc.orig, "pgcode", None)
        if code in _TRANSIENT_SQLSTATES:
            return True
        if isinstance(exc, OperationalError):
            # Connection refused or dropped (no SQLSTATE), or SQLite busy.
            return True
    return False


# Lock conflicts that PostgreSQL resolves by aborting one transaction: running the
# same work again in a new transaction succeeds.
_LOCK_CONFLICTS = {"40P01": "deadlock", "40001": "serialization failure"}

_log = logging.getLogger(__name__)
T = TypeVar("T")


def lock_conflict(exc: BaseException) -> str | None:
    """The lock conflict that aborted the transaction ("deadlock" or "serialization
    failure"), or None for any other error."""
    if isinstance(exc, DBAPIError):
        return _LOCK_CONFLICTS.get(str(getattr(exc.orig, "pgcode", None)))
    return None


def run_in_transaction(
    work: Callable[[Session], T],
    *,
    keep: tuple[type[Exception], ...] = (),
    attempts: int = 4,
) -> T:
    """Run `work(session)` in a transaction of its own and commit; after a deadlock or
    serialization failure, roll back and run it again in a new transaction (up to
    `attempts` in all, after a short random pause), so that such a conflict costs a
    few milliseconds, not a failed request. Any other error rolls back and propagates;
    exceptions of the `keep` types propagate after their transaction's changes are
    committed. `work` must be safe to run again from the start.
    """
    for attempt in range(1, attempts + 1):
        try:
            with transaction() as session:
                try:
                    return work(session)
                except keep as exc:
                    kept = exc  # leave the block normally: the transaction commits
            raise kept
        except DBAPIError as exc:
            conflict = lock_conflict(exc)
            if conflict is None:
                raise
            name = getattr(work, "__qualname__", "transaction")
            if attempt == attempts:
                _log.error("%s in %s; gave up after %d attempts", conflict, name, attempts)
                raise
            _log.warning("%s in %s; retrying (attempt %d of %d)", conflict, name, attempt, attempts)
            # Full jitter, so that the transactions that collided do not collide again.
            time.sleep(random.uniform(0, 0.01 * 2**attempt))
    raise AssertionError("unreachable")
