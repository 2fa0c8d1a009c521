"""The outbox of inputs (sign-ins and gameplay events): applying them in their own
transactions, the sweeper, dead letters and replay. Celery tasks and the CLI are thin
callers of this module.

The messages that wake workers are queued on the session with
questline.infra.after_commit and published after the commit by whichever sender
the process registered (workers/publish.py). They are only wake-up calls: the
sweeper applies every stored input whether or not its message arrives.

Failures: a transient database error (questline.infra.db.is_transient) is not the
input's fault and is never counted; the task retries it. An input that fails for any
other reason (an event the engine cannot evaluate, a definition it cannot read, a
constraint it breaks) fails alone: a failed batch is retried one input at a time, the
failure is counted against that input with its error, and at max_attempts the input
is dead-lettered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from models.base import utcnow
from questline.config import get_settings
from questline.infra import db
from questline.infra.after_commit import after_commit
from questline.infra.gc_pause import collection_paused
from questline.quests import repository
from questline.quests.rules import Applied, apply_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignInStored:
    """An input (a sign-in or a gameplay event) was stored: a worker should apply it soon.
    (The v1 name is kept, like the task's.)"""

    sign_in_id: int
    user_id: int | None = None


@dataclass(frozen=True)
class EventsStored:
    """A batch of gameplay events was stored (POST /events): one message for the batch,
    which wakes one drain, or gives each event its own message in the per-event mode."""

    events: tuple[tuple[int, int], ...]  # (event_id, user_id)


@dataclass(frozen=True)
class SignInReplayed:
    """An operator revived a dead input: it gets a message of its own."""

    sign_in_id: int


@dataclass(frozen=True)
class MoreSignInsWaiting:
    """A drain took a full batch, so more is waiting: wake another drain to help."""


def process_sign_in(event_id: int) -> Applied:
    """Apply one input (a sign-in or a gameplay event) in its own transaction; a no-op
    if it is already processed.

    Waits for the event's lock, so a duplicate delivery that races the first one
    finds the event processed once the first commits. Failures are counted (in a
    separate transaction) and re-raised for the caller to retry.
    """
    guard = not get_settings().unsafe_disable_idempotency_guard
    try:
        with db.transaction() as session:
            return apply_inputs(session, event_ids=[event_id], wait=True, guard=guard)
    except Exception as exc:
        if not db.is_transient(exc):
            count_failure([event_id], exc)
        raise


def drain(
    *,
    created_before_seconds: float = 0.0,
    limit: int | None = None,
    recruit_help: bool = False,
) -> Applied:
    """Apply pending inputs in batches until none is left that nobody else holds.

    A batch that fails is retried one input at a time, so a poison input fails
    (and is eventually dead-lettered) alone. With `recruit_help`, each full batch
    (more is probably waiting) also wakes another drain after it commits. Automatic
    garbage collection waits for the end of each batch (questline.infra.gc_pause).
    """
    settings = get_settings()
    batch = limit or settings.batch_size
    total = Applied()
    while True:
        created_before = utcnow() - timedelta(seconds=created_before_seconds)
        try:
            with collection_paused(), db.transaction() as session:
                applied = apply_inputs(session, created_before=created_before, limit=batch)
                if recruit_help and len(applied.inputs) == batch:
                    after_commit(session, MoreSignInsWaiting())
        except Exception as exc:
            if db.is_transient(exc):
                raise
            log.exception("batch failed; applying its inputs one at a time")
            applied = _drain_one_by_one(created_before, batch)
        _merge(total, applied)
        if len(applied.inputs) < batch:
            return total


def _drain_one_by_one(created_before: Any, batch: int) -> Applied:
    with db.transaction() as session:
        candidates = [
            row.event_id
            for row in repository.lock_inputs(session, created_before=created_before, limit=batch)
        ]
    total = Applied()
    for event_id in candidates:
        try:
            with db.transaction() as session:
                _merge(total, apply_inputs(session, event_ids=[event_id]))
        except Exception as exc:
            if db.is_transient(exc):
                raise
            log.exception("input %s failed", event_id)
            count_failure([event_id], exc)
    return total


def _merge(total: Applied, part: Applied) -> None:
    total.inputs += part.inputs
    total.users.update(part.users)
    total.lag_seconds += part.lag_seconds
    total.rewards_earned += part.rewards_earned
    total.history_events += part.history_events


def count_failure(event_ids: Sequence[int], exc: BaseException) -> None:
    """Count a failed attempt against each event (for errors a retry cannot cure);
    best-effort when the database is away."""
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
        log.warning("could not record failure of inputs %s", list(event_ids), exc_info=True)


def sweep() -> Applied:
    """Apply inputs left unprocessed longer than sweep_after_seconds. Safe to run
    on every worker at once (old idempotency keys are the pruner's: questline.retention)."""
    return drain(created_before_seconds=get_settings().sweep_after_seconds)


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
    """Unprocessed inputs, pending or dead (or only the dead letters), for `questline
    events` ("sign_in_id" is v1's name for event_id)."""
    with db.transaction() as session:
        return [
            {
                "sign_in_id": e.event_id,
                "event_id": e.event_id,
                "type": e.type,
                "user_id": e.user_id,
                "state": "dead" if e.dead_at is not None else "pending",
                "attempts": e.attempts,
                "created_at": e.created_at.isoformat(),
                "last_error": e.last_error,
            }
            for e in repository.list_unprocessed(session, limit=limit, dead_only=dead_only)
        ]


def revive(event_id: int) -> bool:
    """Clear an event's dead-letter state so it is processed again, and send it a
    message after the commit; False if it is not an unprocessed input."""
    with db.transaction() as session:
        revived = repository.revive(session, event_id)
        if revived:
            after_commit(session, SignInReplayed(event_id))
        return revived
