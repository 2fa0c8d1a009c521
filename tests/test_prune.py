"""Pruning spent refresh tokens and old idempotency keys: a job of its own, on each
worker's timer and as the task questline.prune, never inside the outbox sweeper."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import IdempotencyKey, RefreshToken
from models.base import utcnow
from questline import outbox, retention
from questline.config import get_settings
from questline.infra import db
from tests import factories as f
from tests import support
from workers import tasks

HOUR = timedelta(hours=1)


def add_token(session: Session, user_id: int, name: str, now: datetime, **times: datetime) -> None:
    """A refresh token that lives a day past `now`, unless `times` says otherwise."""
    columns = {"created_at": now - 2000 * HOUR, "expires_at": now + 24 * HOUR, **times}
    session.add(
        RefreshToken(token_hash=name.ljust(64, "0"), user_id=user_id, family_id=name, **columns)
    )


def add_key(session: Session, user_id: int, key: str, created_at: datetime) -> None:
    session.add(
        IdempotencyKey(
            user_id=user_id,
            key=key,
            fingerprint="claim:1",
            status_code=409,
            response={"detail": "nothing to claim"},
            created_at=created_at,
        )
    )


def rows_by_age(now: datetime, token_retention: timedelta, key_retention: timedelta) -> int:
    """A user with refresh tokens and idempotency keys on both sides of their retention
    as of `now`; the user_id. KEPT is what a prune at `now` leaves."""
    old_token, recent_token = now - token_retention - HOUR, now - token_retention + HOUR
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        add_token(session, user_id, "live", now)
        add_token(session, user_id, "used-long-ago", now, used_at=old_token)
        add_token(session, user_id, "used-lately", now, used_at=recent_token)
        add_token(session, user_id, "revoked-long-ago", now, revoked_at=old_token)
        add_token(session, user_id, "expired-long-ago", now, expires_at=old_token)
        add_token(session, user_id, "expired-lately", now, expires_at=recent_token)
        add_key(session, user_id, "old", now - key_retention - HOUR)
        add_key(session, user_id, "recent", now - key_retention + HOUR)
    return user_id


KEPT = ("live used-lately expired-lately", "recent")


def remaining(user_id: int) -> tuple[str, str]:
    with db.transaction() as session:
        tokens = session.scalars(
            select(RefreshToken.family_id)
            .where(RefreshToken.user_id == user_id)
            .order_by(RefreshToken.token_id)
        ).all()
        keys = session.scalars(
            select(IdempotencyKey.key).where(IdempotencyKey.user_id == user_id)
        ).all()
    return " ".join(tokens), " ".join(sorted(keys))


def default_retention() -> tuple[timedelta, timedelta]:
    settings = get_settings()
    return (
        settings.refresh_token_retention_hours * HOUR,
        settings.idempotency_retention_hours * HOUR,
    )


def test_prune_deletes_only_what_is_past_its_retention() -> None:
    # Ten years ahead: rows that only this prune (at that `now`) may take, not the
    # timer of a worker running meanwhile.
    later = utcnow() + 10 * 365 * 24 * HOUR
    user_id = rows_by_age(later, *default_retention())
    pruned = retention.prune(now=later)
    assert (pruned.refresh_tokens, pruned.idempotency_keys) == (3, 1)
    assert remaining(user_id) == KEPT
    assert retention.prune(now=later) == retention.Pruned(0, 0)  # nothing left to do


def test_the_outbox_sweeper_prunes_nothing() -> None:
    user_id = rows_by_age(utcnow(), *default_retention())
    before = remaining(user_id)
    assert before != KEPT
    outbox.sweep()
    assert remaining(user_id) == before


# Workers started below keep tokens 1 hour and keys 24 hours; with rows aged for that,
# only they can prune them (other workers keep rows longer, by default).
SHORT = {
    "QUESTLINE_REFRESH_TOKEN_RETENTION_HOURS": "1",
    "QUESTLINE_IDEMPOTENCY_RETENTION_HOURS": "24",
}


def test_the_prune_task_runs_in_a_worker() -> None:
    user_id = rows_by_age(utcnow(), HOUR, 24 * HOUR)
    with support.worker_running(
        name="prune-task", queues="prune-test", QUESTLINE_SWEEPER_ENABLED="false", **SHORT
    ):
        tasks.prune.apply_async(queue="prune-test")
        support.wait_until(lambda: remaining(user_id) == KEPT, 60, "the task to prune")


def test_each_worker_prunes_on_a_timer_of_its_own() -> None:
    user_id = rows_by_age(utcnow(), HOUR, 24 * HOUR)
    with support.worker_running(
        name="pruner",
        queues="prune-test",  # no task reaches it: only its timer can prune
        QUESTLINE_PRUNE_INTERVAL_SECONDS="0.5",
        QUESTLINE_SWEEPER_ENABLED="false",
        **SHORT,
    ) as worker:
        support.wait_until(lambda: remaining(user_id) == KEPT, 60, "the worker to prune")
        support.wait_until(
            lambda: "pruned 3 refresh tokens and 1 idempotency keys" in worker.output(),
            10,
            "the pruner's log line",
        )
