"""Thin Celery tasks: they take ids, call the domain, and are safe to run twice."""

from __future__ import annotations

from typing import Any

from celery import Task

from questline import db, outbox
from workers.celery_app import app
from workers.metrics import observe_applied

# Retry countdowns stay far below the broker's visibility timeout.
MAX_RETRIES = 6


def backoff(retries: int) -> float:
    return float(min(30, 0.5 * 2**retries))


@app.task(bind=True, name="questline.process_sign_in", max_retries=MAX_RETRIES)
def process_sign_in(self: Task, event_id: int, user_id: int | None = None) -> dict[str, Any]:
    """Apply one sign-in to quest progress, exactly once however often it is delivered."""
    try:
        applied = outbox.process_sign_in(event_id)
    except Exception as exc:
        if db.is_transient(exc):
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        raise
    observe_applied(applied)
    return {
        "event_id": event_id,
        "user_id": user_id,
        "outcome": "applied" if applied.sign_ins else "already processed",
        "rewards_earned": applied.rewards_earned,
    }


@app.task(name="questline.sweep_outbox")
def sweep_outbox() -> dict[str, Any]:
    """Apply sign-ins whose message never arrived (also run by every worker on a timer)."""
    applied = outbox.sweep()
    observe_applied(applied)
    return {"applied": len(applied.sign_ins), "rewards_earned": applied.rewards_earned}
