"""Where the workers and `recompute` get quest definitions: one small interface.

`current(session)` answers the catalog as of the caller's transaction. The database
source reads the catalog version (share-locked on PostgreSQL, so no catalog write
commits while the caller grants against what it read) and keeps the parsed
definitions in this process under that version, reloading them only when the version
moved. A catalog write bumps the version in its own transaction, so a write that has
returned applies to every event applied after it, with no cache to trust.

A quest whose stored definition the engine refuses is kept aside (`broken`) with the
reason: events it could have counted fail with that reason, and are dead-lettered
after max_attempts, instead of being applied without it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.orm import Session

from questline.catalog import repository
from questline.catalog.definitions import quest_definition
from questline.config import get_settings
from questline.engine import QuestDef, QuestInvalid


@dataclass(frozen=True)
class BrokenQuest:
    """An active quest the engine cannot read. `event_type` is its trigger's event type
    when that much is readable, else None (it could match any event)."""

    quest_id: int
    event_type: str | None
    reason: str


@dataclass(frozen=True)
class Catalog:
    """The active quests at one catalog version, as engine definitions, by quest_id."""

    version: int
    quests: tuple[QuestDef, ...]
    broken: tuple[BrokenQuest, ...] = ()
    # The active quests as the API shows them (catalog.service.quest_view), when the
    # source has them (the gRPC copy); the player's views are built from these.
    views: tuple[Mapping[str, Any], ...] = ()
    _by_type: Mapping[str, tuple[QuestDef, ...]] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )
    _by_id: Mapping[int, QuestDef] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        by_type: dict[str, list[QuestDef]] = {}
        for quest in sorted(self.quests, key=lambda q: q.quest_id):
            by_type.setdefault(quest.trigger.event, []).append(quest)
        object.__setattr__(self, "_by_type", {k: tuple(v) for k, v in by_type.items()})
        object.__setattr__(self, "_by_id", {q.quest_id: q for q in self.quests})

    def triggered_by(self, event_type: str) -> tuple[QuestDef, ...]:
        """The quests whose trigger names `event_type`, in quest_id order."""
        return self._by_type.get(event_type, ())

    def quest(self, quest_id: int) -> QuestDef | None:
        """The active quest `quest_id`, or None."""
        return self._by_id.get(quest_id)

    def broken_for(self, event_type: str) -> list[BrokenQuest]:
        """Unreadable quests that an event of `event_type` could have counted for."""
        return [b for b in self.broken if b.event_type in (None, event_type)]


class CatalogSource(Protocol):
    """Quest definitions for the caller's transaction (database or gRPC)."""

    def current(self, session: Session) -> Catalog:
        """The catalog as of `session`'s transaction, at its current version."""
        ...

    def quest_views(self, session: Session) -> list[Mapping[str, Any]]:
        """The active quests as the API shows them, at least as new as the catalog
        version `session` sees (for the player's views; nothing is granted on them)."""
        ...


class DatabaseCatalog:
    """Definitions read from the database, kept in this process per catalog version."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # By database URL (tests use several): the catalog and the stamp it was read at.
        self._copies: dict[str, tuple[tuple[int, str], Catalog]] = {}

    def current(self, session: Session) -> Catalog:
        """The catalog at the version this transaction sees (share-locked on PostgreSQL)."""
        stamp = repository.lock_catalog_version(session)
        where = str(session.get_bind().engine.url)
        copy = self._copies.get(where)
        if copy is not None and copy[0] == stamp:
            return copy[1]
        catalog = load(session, stamp[0])
        with self._lock:
            self._copies[where] = (stamp, catalog)
        return catalog

    def quest_views(self, session: Session) -> list[Mapping[str, Any]]:
        """The catalog service's cached views (keyed by the catalog version)."""
        from questline.catalog import service

        return list(service.list_quests(session))


def load(session: Session, version: int) -> Catalog:
    """Read and parse the active quests (the caller has read `version` in this transaction)."""
    quests: list[QuestDef] = []
    broken: list[BrokenQuest] = []
    for row in repository.list_quests(session, active_only=True):
        try:
            quests.append(quest_definition(row))
        except (QuestInvalid, TypeError, ValueError) as exc:
            trigger = row.trigger if isinstance(row.trigger, dict) else {}
            event = trigger.get("event") if isinstance(trigger.get("event"), str) else None
            reason = exc.detail if isinstance(exc, QuestInvalid) else str(exc)
            broken.append(
                BrokenQuest(row.quest_id, event, f"quest {row.quest_id} is invalid: {reason}")
            )
    return Catalog(version=version, quests=tuple(quests), broken=tuple(broken))


_database = DatabaseCatalog()


def catalog_source() -> CatalogSource:
    """The source this process reads definitions from: the catalog's gRPC server when
    QUESTLINE_CATALOG_GRPC names one (not in the embedded mode), else the database."""
    settings = get_settings()
    if settings.catalog_grpc is None or settings.embedded:
        return _database
    from questline.catalog import grpc_source

    return grpc_source.shared(
        settings.catalog_grpc, timeout=settings.catalog_grpc_timeout_seconds
    )
