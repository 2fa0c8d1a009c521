"""The catalog read over gRPC (`questline grpc`), for processing and the workers.

Chosen by QUESTLINE_CATALOG_GRPC=host:port (source.catalog_source). The process keeps a
copy of the active quests; a thread holds a WatchCatalog stream open and replaces the
copy with each change, reconnecting with exponential backoff and jitter when the stream
breaks. The copy is a speed-up, never trusted on its own: `current(session)` reads the
catalog version in the caller's transaction (share-locked, as the database source does,
so no catalog write commits meanwhile) and, if the copy is at another version, refreshes
it with ListQuests before answering. If the server cannot be reached and the copy is not
at that version, it raises CatalogUnavailable, a transient error: the inputs stay
pending and are retried, never applied with an outdated definition.

gRPC channels do not survive fork(): each process (each prefork child) makes its own, on
first use.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any

import grpc
from sqlalchemy.orm import Session

from questline.catalog import repository, wire
from questline.catalog.source import BrokenQuest, Catalog
from questline.engine import QuestDef, QuestInvalid, parse_quest
from questline.grpc_gen.v1 import catalog_pb2, catalog_pb2_grpc
from questline.infra.db import TransientError

log = logging.getLogger(__name__)

BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0


class CatalogUnavailable(TransientError):
    """The catalog's gRPC server cannot be reached and the copy is not current."""


def catalog_from(version: int, quests: list[catalog_pb2.Quest]) -> Catalog:
    """The engine's catalog from the quests of a ListQuests or WatchCatalog answer."""
    parsed: list[QuestDef] = []
    broken: list[BrokenQuest] = []
    for quest in quests:
        reason = quest.invalid_reason
        if not reason:
            try:
                parsed.append(parse_quest(wire.quest_view(quest)))
                continue
            except QuestInvalid as exc:
                reason = f"quest {quest.quest_id} is invalid: {exc.detail}"
        broken.append(BrokenQuest(quest.quest_id, quest.trigger.event or None, reason))
    views = tuple(wire.quest_view(quest) for quest in quests)
    return Catalog(version=version, quests=tuple(parsed), broken=tuple(broken), views=views)


class GrpcCatalog:
    """A CatalogSource reading `Catalog` at `target` (host:port), with a watched copy."""

    def __init__(self, target: str, *, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._lock = threading.Lock()
        self._copy: Catalog | None = None
        self._problem = "not connected yet"
        self._stop = threading.Event()
        # gRPC's own reconnect backoff grows to 2 minutes; a catalog server back from a
        # restart must be found within seconds, while events wait for it.
        self._channel = grpc.insecure_channel(
            target,
            options=[
                ("grpc.initial_reconnect_backoff_ms", 100),
                ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", int(BACKOFF_MAX * 1000)),
            ],
        )
        self._stub = catalog_pb2_grpc.CatalogStub(self._channel)
        self._stream: Any = None  # the open WatchCatalog call (cancelled by close)
        self._watcher = threading.Thread(target=self._watch, name="catalog-grpc", daemon=True)
        self._watcher.start()

    # --- CatalogSource --------------------------------------------------------

    def current(self, session: Session) -> Catalog:
        """The catalog at the version this transaction sees (share-locked on PostgreSQL);
        CatalogUnavailable if the copy is not there and the server cannot bring it."""
        version, _ = repository.lock_catalog_version(session)
        copy = self._copy
        if copy is not None and copy.version == version:
            return copy
        copy = self.refresh()
        if copy.version != version:
            raise CatalogUnavailable(
                f"the catalog server at {self.target} answered version {copy.version}; "
                f"the database is at {version}"
            )
        return copy

    def quest_views(self, session: Session) -> list[Mapping[str, Any]]:
        """The copy's quest views, refreshed first if the catalog version `session` sees
        (read without a lock: a view grants nothing) differs; CatalogUnavailable if the
        server cannot bring it."""
        version = repository.catalog_version(session)
        copy = self._copy
        if copy is None or copy.version != version:
            copy = self.refresh()
            if copy.version < version:
                raise CatalogUnavailable(
                    f"the catalog server at {self.target} answered version {copy.version}; "
                    f"the database is at {version}"
                )
        return list(copy.views)

    # --- the copy ---------------------------------------------------------------

    @property
    def version(self) -> int | None:
        """The copy's catalog version (None before the first answer)."""
        copy = self._copy
        return None if copy is None else copy.version

    def problem(self) -> str:
        """Why the server is not reachable now ("" while the watch stream is up)."""
        return self._problem

    def refresh(self) -> Catalog:
        """Read the whole catalog now (ListQuests); CatalogUnavailable if the server fails."""
        try:
            answer = self._stub.ListQuests(catalog_pb2.ListQuestsRequest(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise CatalogUnavailable(
                f"the catalog server at {self.target} did not answer: {_describe(exc)}"
            ) from None
        catalog = catalog_from(answer.catalog_version, list(answer.quests))
        with self._lock:
            self._copy = catalog  # the server's answer at this moment: it wins
        return catalog

    def close(self) -> None:
        """Stop watching and close the channel."""
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()
        self._channel.close()
        self._watcher.join(5)

    # --- the watch thread -------------------------------------------------------

    def _keep(self, change: catalog_pb2.CatalogChange) -> None:
        catalog = catalog_from(change.catalog_version, list(change.quests))
        with self._lock:
            if self._copy is None or catalog.version >= self._copy.version:
                self._copy = catalog

    def _watch(self) -> None:
        delay = BACKOFF_FIRST
        while not self._stop.is_set():
            try:
                # known_version 0: the current catalog comes first, which also tells that
                # the stream is up (a copy kept while away may be behind).
                stream = self._stub.WatchCatalog(catalog_pb2.WatchCatalogRequest(known_version=0))
                self._stream = stream
                for change in stream:
                    self._keep(change)
                    self._problem = ""
                    delay = BACKOFF_FIRST
                if not self._stop.is_set():
                    self._problem = f"the catalog server at {self.target} ended the stream"
            except grpc.RpcError as exc:
                if self._stop.is_set():
                    return
                self._problem = f"the catalog server at {self.target}: {_describe(exc)}"
                log.warning("catalog watch: %s; reconnecting in %.1f s", self._problem, delay)
            except Exception:
                log.exception("catalog watch failed; reconnecting in %.1f s", delay)
            # Full jitter, so that many processes do not reconnect in step.
            self._stop.wait(random.uniform(0, delay))
            delay = min(delay * 2, BACKOFF_MAX)


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if isinstance(exc, grpc.Call) else None
    details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return f"{code.name if code else 'error'}: {details}"


_sources: dict[tuple[int, str], GrpcCatalog] = {}
_sources_lock = threading.Lock()


def shared(target: str, *, timeout: float) -> GrpcCatalog:
    """This process's source for `target` (a new one in a forked child)."""
    key = (os.getpid(), target)
    source = _sources.get(key)
    if source is None:
        with _sources_lock:
            source = _sources.get(key)
            if source is None:
                source = GrpcCatalog(target, timeout=timeout)
                _sources[key] = source
    return source


def wait_loaded(source: GrpcCatalog, timeout: float) -> bool:
    """Wait until the copy holds a catalog (for start-up checks); False on time-out."""
    deadline = time.monotonic() + timeout
    while source.version is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return source.version is not None
