"""Catalog read cache, keyed by the catalog version.

Every catalog write bumps the catalog version in the database, in the write's own
transaction (repository.bump_version). A reader first reads the current version
from the database, then looks for `ql:catalog:v{version}:{name}`: in this
process, then in Redis, and on a miss loads from the database (reading the version
before the data, so an entry stored under version N is at least as new as write N).

So a read that starts after a write has returned never trusts an entry older than
that write, whatever Redis missed or kept while it was away: there is no
invalidation to lose. Entries of older versions are simply never read again; they
expire after catalog_cache_ttl_seconds. The in-process copy of old versions is
dropped once this process sees a newer one (a write here, after its commit, or a read).

A lease spares most reads the version query. The version a process read is trusted for
LEASE_SECONDS from the start of the read that found it (a read that finds the lease
older reads the version again), and every catalog write, after its commit, waits out
LEASE_SECONDS before it returns (the after-commit action below). So a read that starts
after a write has returned trusts a version read after the write committed, in every
process: API.md's "reads through any cache see the change at once" holds without a
database round trip per read. The workers do not read through this cache: they check
the version inside their own transaction (questline.catalog.source).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy.orm import Session

from questline.catalog import repository
from questline.config import get_settings
from questline.infra import after_commit, db
from questline.infra.kv import KeyValueError, get_kv
from questline.infra.lease import Lease

log = logging.getLogger(__name__)


# How long a version read is trusted without reading it again (see the module doc).
# It is renewed in the background at half of it, so reads wait for the database only
# when a version query takes longer than that (a starved database); every catalog
# write returns this much later.
LEASE_SECONDS = 0.2


@dataclass(frozen=True)
class CatalogChanged:
    """A catalog write committed, making `version` the current catalog version. The
    committing thread then waits out every process's lease, once per commit however
    many writes it held (after_commit's hold), before the write returns."""

    version: int
    hold_after_commit: ClassVar[float] = LEASE_SECONDS


def catalog_changed(session: Session) -> int:
    """Record a catalog write: bump the version in the write's transaction; after the
    commit this process drops its copies of older versions and waits out the other
    processes' leases. The new version."""
    version = repository.bump_version(session)
    after_commit.after_commit(session, CatalogChanged(version))
    return version


def _read_version() -> int:
    with db.session_factory()() as session:
        version = repository.catalog_version(session)
        session.rollback()
    return version


_version = Lease("catalog-version", LEASE_SECONDS, _read_version)


def forget_lease() -> None:
    """Make the next read of this process read the version (for tests that write the
    catalog behind the catalog service's back)."""
    _version.forget()


def peek(name: str) -> Any:
    """The value under `name` if this process holds it at a version it may trust now,
    without any I/O; MISSING otherwise (then use cached())."""
    version = _version.fresh()
    if version is None:
        return MISSING
    local = _local.get(_key(version, name))
    if local is None or local[1] <= time.monotonic():
        return MISSING
    return local[0]


MISSING: Any = object()


def _key(version: int, name: str) -> str:
    return f"ql:catalog:v{version}:{name}"


def invalidate() -> None:
    """For catalog rows written outside the catalog service (tests, hand-written SQL):
    bump the version in a transaction of its own, so no reader trusts an older copy."""
    with db.transaction() as session:
        catalog_changed(session)


# Decoded entries kept in this process under their versioned key, so a hit costs no
# Redis round trip or decoding (and, under a lease, no query at all).
_local: dict[str, tuple[Any, float]] = {}
_local_version = 0
_local_lock = threading.Lock()
_LOCAL_LIMIT = 1000


# A version the caller read in its own transaction, for reads that must be labelled
# with the version they are at (the gRPC catalog's answers): the lease does not apply.
_pinned: ContextVar[int | None] = ContextVar("questline_catalog_version", default=None)


@contextmanager
def at_version(version: int) -> Iterator[None]:
    """Cached reads in this block are at `version`, which the caller read in its own
    transaction, whatever this process's lease holds (the lease may still trust an older
    version for up to LEASE_SECONDS after a write elsewhere)."""
    token = _pinned.set(version)
    try:
        yield
    finally:
        _pinned.reset(token)


def cached(session: Session, name: str, load: Callable[[], Any]) -> Any:
    """The value under `name` at the current catalog version, loaded by `load` (which
    reads through `session`) on a miss."""
    version = _pinned.get()
    if version is None:
        version = _version.fresh()
    if version is None:
        version = _version.renew(lambda: repository.catalog_version(session))
    key = _key(version, name)
    _see_version(version)
    local = _local.get(key)
    if local is not None and local[1] > time.monotonic():
        return local[0]
    ttl = get_settings().catalog_cache_ttl_seconds
    try:
        raw = get_kv().get(key)
    except KeyValueError:
        log.warning("catalog cache unavailable; reading the database")
        raw, reachable = None, False
    else:
        reachable = True
    if raw is not None:
        value = json.loads(raw)
    else:
        value = load()
        if reachable:
            try:
                get_kv().set(key, json.dumps(value, default=str), ttl)
            except KeyValueError:
                log.warning("catalog cache unavailable; not storing %s", name)
    _remember(key, version, value, ttl)
    return value


def _see_version(version: int) -> None:
    global _local_version
    if version > _local_version:
        with _local_lock:
            if version > _local_version:
                _local_version = version
                _local.clear()  # older versions' entries are never read again


def _remember(key: str, version: int, value: Any, ttl: float) -> None:
    with _local_lock:
        if version < _local_version:
            return  # a slow reader of an old version: nobody reads that key any more
        if len(_local) >= _LOCAL_LIMIT:
            _local.clear()
        _local[key] = (value, time.monotonic() + ttl)


def note_version(version: int) -> None:
    """A catalog write of this process committed `version`: drop older copies and read
    the version again next time. Then the committing thread waits LEASE_SECONDS
    (CatalogChanged.hold_after_commit): the write must not return while a process could
    still trust a version read before it committed. Well under a second, and catalog
    writes are rare admin work."""
    _see_version(version)
    _version.forget()


# Processes that publish (workers/publish.py) replace this sender with one that also
# tells the gRPC server's watchers.
after_commit.register(CatalogChanged, lambda message: note_version(message.version))
