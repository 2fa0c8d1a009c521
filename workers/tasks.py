"""Thin Celery tasks: they take ids, call the domain, and are safe to run twice.

One retry policy for the input tasks (RETRY_POLICY): a transient database
error (serialization failure, deadlock, lost connection: questline.infra.db.is_transient)
is retried by Celery with exponential backoff and full jitter, capped at
RETRY_BACKOFF_MAX seconds, at most QUESTLINE_TASK_MAX_RETRIES times; after that
the task gives up and the outbox sweeper takes the inputs later. Transient errors
are never counted against an event. Every other error counts one attempt against
the event (questline.outbox.count_failure) and is not retried by Celery; the
sweeper tries again, and at QUESTLINE_MAX_ATTEMPTS the event is dead-lettered.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery import Task

from questline import outbox, retention
from questline.config import get_settings
from questline.infra import db
from questline.webhooks import delivery
from workers.celery_app import app
from workers.metrics import observe_applied, observe_delivery
from workers.publish import clear_wakeup

log = logging.getLogger(__name__)

# Below the broker's visibility timeout (at least 45 s, QUESTLINE_BROKER_VISIBILITY_
# TIMEOUT_SECONDS), or a retry waiting for its countdown would be delivered twice.
RETRY_BACKOFF_MAX = 30


class TransientDatabaseError(Exception):
    """A database error that a retry of the whole task can cure."""


RETRY_POLICY: dict[str, Any] = {
    "autoretry_for": (TransientDatabaseError,),
    "retry_backoff": 1,  # 1, 2, 4, ... seconds, each drawn at random below (full jitter)
    "retry_backoff_max": RETRY_BACKOFF_MAX,
    "retry_jitter": True,
    "max_retries": get_settings().task_max_retries,
}


@contextmanager
def transient_errors_retried() -> Iterator[None]:
    """Turn transient database errors into the one exception the policy retries."""
    try:
        yield
    except Exception as exc:
        if db.is_transient(exc):
            raise TransientDatabaseError(f"{type(exc).__name__}: {exc}") from exc
        raise


@app.task(bind=True, name="questline.process_sign_in", **RETRY_POLICY)
def process_sign_in(self: Task, event_id: int, user_id: int | None = None) -> dict[str, Any]:
    """Apply one input (a sign-in or a gameplay event) to quest progress, exactly once
    however often it is delivered. (The v1 name is kept: brokers and Flower know it.)"""
    with transient_errors_retried():
        applied = outbox.process_sign_in(event_id)
    observe_applied(applied)
    return {
        "event_id": event_id,
        "user_id": user_id,
        "outcome": "applied" if applied.inputs else "already processed",
        "rewards_earned": applied.rewards_earned,
    }


@app.task(bind=True, name="questline.drain_outbox", **RETRY_POLICY)
def drain_outbox(self: Task) -> dict[str, Any]:
    """Apply every pending input in batches: the coalesced wake-up sent after logins and
    event ingestion."""
    if not self.request.retries:
        # The flag stays set while we linger, so new inputs ride on this drain.
        time.sleep(get_settings().drain_linger_seconds)
    clear_wakeup()
    with transient_errors_retried():
        # A full batch means more is waiting: it wakes an idle worker process to help.
        applied = outbox.drain(recruit_help=True)
    observe_applied(applied)
    lags = applied.lag_seconds
    return {
        "applied": len(applied.inputs),
        "first_sign_in_id": min(applied.inputs, default=None),
        "last_sign_in_id": max(applied.inputs, default=None),
        "rewards_earned": applied.rewards_earned,
        "max_lag_seconds": round(max(lags), 3) if lags else None,
    }


@app.task(name="questline.sweep_outbox")
def sweep_outbox() -> dict[str, Any]:
    """Apply inputs whose message never arrived (also run by every worker on a timer)."""
    applied = outbox.sweep()
    observe_applied(applied)
    return {"applied": len(applied.inputs), "rewards_earned": applied.rewards_earned}


# A hard stop well past a batch's own deadlines (the batch ends itself first).
WEBHOOK_TIME_LIMIT = int(2 * get_settings().webhook_timeout_seconds) + 60


@app.task(
    bind=True, name="questline.deliver_webhook", time_limit=WEBHOOK_TIME_LIMIT, **RETRY_POLICY
)
def deliver_webhook(self: Task, delivery_id: int, webhook_id: int | None = None) -> dict[str, Any]:
    """Make the next attempt of one webhook delivery (queue `webhooks`), with those of
    other due deliveries to the same endpoint. Safe to run twice: attempts are taken
    under the deliveries' row locks, and one not due or taken is skipped. Retries are
    not Celery's: each answer schedules next_attempt_at and the timer sends it then."""
    with transient_errors_retried():
        report = delivery.deliver(delivery_id)
    observe_delivery(report)
    result = dataclasses.asdict(report)
    if result["webhook_id"] is None:
        result["webhook_id"] = webhook_id
    for attempt in report.attempts():
        log.info(
            "webhook %s delivery %s attempt %s: %s (%s)",
            attempt.webhook_id,
            attempt.delivery_id,
            attempt.attempt,
            attempt.outcome,
            attempt.status_code if attempt.status_code is not None else attempt.error,
        )
    return result


@app.task(name="questline.prune")
def prune() -> dict[str, int]:
    """Delete what outlived its retention (also run by every worker on a timer)."""
    return dataclasses.asdict(retention.prune())
