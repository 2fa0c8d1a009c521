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
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from questline.catalog import repository
from questline.config import get_settings
from questline.infra import after_commit, db
from questline.infra.kv import KeyValueError, get_kv

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CatalogChanged:
    """A catalog write committed, making `version` the current catalog version."""

    version: int


def catalog_changed(session: Session) -> int:
    """Record a catalog write: bump the version in the write's transaction; after the
    commit this process drops its copies of older versions. The new version."""
    version = repository.bump_version(session)
    after_commit.after_commit(session, CatalogChanged(version))
    return version


def invalidate() -> None:
    """For catalog rows written outside the catalog service (tests, hand-written SQL):
    bump the version in a transaction of its own, so no reader trusts an older copy."""
    with db.transaction() as session:
        catalog_changed(session)


# Decoded entries kept in this process under their versioned key, so a hit costs
# one small query (the version) and no Redis round trip or decoding.
_local: dict[str, tuple[Any, float]] = {}
_local_version = 0
_local_lock = threading.Lock()
_LOCAL_LIMIT = 1000


def cached(session: Session, name: str, load: Callable[[], Any]) -> Any:
    """The value under `name` at the current catalog version, loaded by `load` (which
    reads through `session`) on a miss."""
    version = repository.catalog_version(session)
    key = f"ql:catalog:v{version}:{name}"
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
    """A catalog write of this process committed `version`: drop older copies."""
    _see_version(version)


# Processes that publish (workers/publish.py) replace this sender with one that also
# tells the gRPC server's watchers.
after_commit.register(CatalogChanged, lambda message: note_version(message.version))
