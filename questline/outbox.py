"""The sign-in outbox: processing events in their own transactions, the sweeper,
dead letters and replay. Celery tasks and the CLI are thin callers of this module."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from models.base import utcnow
from questline.config import get_settings
from questline.infra import db
from questline.quests import repository
from questline.quests.rules import Applied, apply_sign_ins

log = logging.getLogger(__name__)


def process_sign_in(event_id: int) -> Applied:
    """Apply one sign-in in its own transaction; a no-op if it is already processed.

    Waits for the event's lock, so a duplicate delivery that races the first one
    finds the event processed once the first commits. Failures are counted (in a
    separate transaction) and re-raised for the caller to retry.
    """
    guard = not get_settings().unsafe_disable_idempotency_guard
    try:
        with db.transaction() as session:
            return apply_sign_ins(session, event_ids=[event_id], wait=True, guard=guard)
    except Exception as exc:
        count_failure([event_id], exc)
        raise


def drain(
    *,
    created_before_seconds: float = 0.0,
    limit: int | None = None,
    on_full_batch: Callable[[], object] | None = None,
) -> Applied:
    """Apply pending sign-ins in batches until none is left that nobody else holds.

    A batch that fails is retried one event at a time, so a poison event fails
    (and is eventually dead-lettered) alone. `on_full_batch` is called after each
    full batch (more is probably waiting), e.g. to wake another worker.
    """
    settings = get_settings()
    batch = limit or settings.batch_size
    total = Applied()
    while True:
        created_before = utcnow() - timedelta(seconds=created_before_seconds)
        try:
            with db.transaction() as session:
                applied = apply_sign_ins(session, created_before=created_before, limit=batch)
        except Exception as exc:
            if db.is_transient(exc):
                raise
            log.exception("batch failed; applying its events one at a time")
            applied = _drain_one_by_one(created_before, batch)
        _merge(total, applied)
        if len(applied.sign_ins) < batch:
            return total
        if on_full_batch is not None:
            on_full_batch()


def _drain_one_by_one(created_before: Any, batch: int) -> Applied:
    with db.transaction() as session:
        candidates = [
            row.event_id
            for row in repository.lock_sign_ins(session, created_before=created_before, limit=batch)
        ]
    total = Applied()
    for event_id in candidates:
        try:
            with db.transaction() as session:
                _merge(total, apply_sign_ins(session, event_ids=[event_id]))
        except Exception as exc:
            if db.is_transient(exc):
                raise
            log.exception("sign-in %s failed", event_id)
            count_failure([event_id], exc)
    return total


def _merge(total: Applied, part: Applied) -> None:
    total.sign_ins += part.sign_ins
    total.users.update(part.users)
    total.lag_seconds += part.lag_seconds
    total.rewards_earned += part.rewards_earned
    total.history_events += part.history_events


def count_failure(event_ids: Sequence[int], exc: BaseException) -> None:
    """Count a failed attempt against each event; best-effort when the database is away."""
    settings = get_settings()
    try:
        with db.transaction() as session:
            repository.record_failure(
                session,
                event_ids,
                error=f"{type(exc).__name__}: {exc}",
                max_attempts=settings.max_attempts,
                now=utcnow(),
            )
    except Exception:
        log.warning("could not record failure of sign-ins %s", list(event_ids), exc_info=True)


def sweep() -> Applied:
    """Apply sign-ins left unprocessed longer than sweep_after_seconds, and purge old
    idempotency keys. Safe to run on every worker at once."""
    settings = get_settings()
    applied = drain(created_before_seconds=settings.sweep_after_seconds)
    with db.transaction() as session:
        repository.purge_idempotency_keys(
            session, older_than=utcnow() - timedelta(hours=settings.idempotency_retention_hours)
        )
    return applied


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    dead: int
    oldest_pending_age_seconds: float


def stats() -> OutboxStats:
    with db.transaction() as session:
        pending, dead, oldest = repository.outbox_stats(session)
    age = (utcnow() - oldest).total_seconds() if oldest is not None else 0.0
    return OutboxStats(pending=pending, dead=dead, oldest_pending_age_seconds=max(age, 0.0))


def list_unprocessed(limit: int = 100, *, dead_only: bool = False) -> list[dict[str, Any]]:
    """Unprocessed sign-ins (or only the dead letters) for `questline events`."""
    with db.transaction() as session:
        return [
            {
                "sign_in_id": e.event_id,
                "user_id": e.user_id,
                "state": "dead" if e.dead_at is not None else "pending",
                "attempts": e.attempts,
                "created_at": e.created_at.isoformat(),
                "last_error": e.last_error,
            }
            for e in repository.list_unprocessed(session, limit=limit, dead_only=dead_only)
        ]


def revive(event_id: int) -> bool:
    """Clear an event's dead-letter state so it is processed again."""
    with db.transaction() as session:
        return repository.revive(session, event_id)
