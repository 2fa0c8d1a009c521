"""The catalog as the watch streams see it: one reader per server process.

A thread keeps the latest CatalogChange. It rereads the catalog version when a catalog
write is announced on Redis (workers.publish.CATALOG_CHANNEL, sent after the write's
commit) and, in case that message is lost or Redis is away, every
grpc_watch_poll_seconds; when the version moved it reads the catalog once and wakes
every stream. So a stream sees a write within a pub/sub round trip, at worst within
one poll.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from questline.catalog import repository
from questline.config import get_settings
from questline.grpc_gen.v1 import catalog_pb2
from questline.infra.db import session_factory
from workers.publish import CATALOG_CHANNEL

log = logging.getLogger(__name__)


def _version() -> int:
    with session_factory()() as session:
        return repository.catalog_version(session)


class CatalogWatch:
    """The latest catalog, and waiting for a newer one."""

    def __init__(self, read_catalog: Callable[[], catalog_pb2.CatalogChange]) -> None:
        self._read = read_catalog
        self._changed = threading.Condition()
        self._latest: catalog_pb2.CatalogChange | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pubsub: Any = None

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="catalog-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End every stream's wait; streams return (the server is shutting down)."""
        self._stop.set()
        with self._changed:
            self._changed.notify_all()

    def newer_than(self, known: int, *, wait: float) -> catalog_pb2.CatalogChange | None:
        """The latest catalog if its version is above `known`, waiting up to `wait` seconds
        for one; None if there is none yet (or the server is stopping)."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._stop.is_set()
                or (self._latest is not None and self._latest.catalog_version > known),
                timeout=wait,
            )
            if self._stop.is_set():
                return None
            latest = self._latest
        if latest is None or latest.catalog_version <= known:
            return None
        return latest

    def refresh(self) -> None:
        """Read the version; if it moved, read the catalog and wake the streams."""
        latest = self._latest
        if latest is not None and _version() == latest.catalog_version:
            return
        change = self._read()
        with self._changed:
            current = self._latest
            if current is None or change.catalog_version > current.catalog_version:
                self._latest = change
                self._changed.notify_all()

    def _run(self) -> None:
        poll = get_settings().grpc_watch_poll_seconds
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception as exc:
                log.warning("could not read the catalog (%s: %s)", type(exc).__name__, exc)
            self._wait_for_announcement(poll)

    def _wait_for_announcement(self, poll: float) -> None:
        """Return when a catalog write is announced, or after `poll` seconds."""
        url = get_settings().redis_url
        if url is None:
            self._stop.wait(poll)
            return
        try:
            if self._pubsub is None:
                client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
                self._pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                self._pubsub.subscribe(CATALOG_CHANNEL)
            self._pubsub.get_message(timeout=poll)
            # Several writes may be announced at once: one read of the version covers all.
            while self._pubsub.get_message(timeout=0) is not None:
                pass
        except (redis.RedisError, OSError) as exc:
            log.warning("catalog announcements unavailable (%s); polling", exc)
            self._pubsub = None
            self._stop.wait(poll)
