"""Thin Celery tasks: they take ids, call the domain, and are safe to run twice."""

from __future__ import annotations

import time
from typing import Any

from celery import Task

from questline import outbox
from questline.config import get_settings
from questline.infra import db
from workers.celery_app import app
from workers.metrics import observe_applied
from workers.publish import clear_wakeup, wake_drainer

# Retry countdowns stay far below the broker's visibility timeout.
MAX_RETRIES = 6


def backoff(retries: int) -> float:
    return float(min(30, 0.5 * 2**retries))


@app.task(bind=True, name="questline.process_sign_in", max_retries=MAX_RETRIES)
def process_sign_in(self: Task, event_id: int, user_id: int | None = None) -> dict[str, Any]:
    """Apply one input (a sign-in or a gameplay event) to quest progress, exactly once
    however often it is delivered. (The v1 name is kept: brokers and Flower know it.)"""
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
        "outcome": "applied" if applied.inputs else "already processed",
        "rewards_earned": applied.rewards_earned,
    }


@app.task(bind=True, name="questline.drain_outbox", max_retries=MAX_RETRIES)
def drain_outbox(self: Task) -> dict[str, Any]:
    """Apply every pending input in batches: the coalesced wake-up sent after logins and
    event ingestion."""
    if not self.request.retries:
        # The flag stays set while we linger, so new sign-ins ride on this drain.
        time.sleep(get_settings().drain_linger_seconds)
    clear_wakeup()
    try:
        # A full batch means more is waiting: recruit an idle worker process to help.
        applied = outbox.drain(on_full_batch=wake_drainer)
    except Exception as exc:
        if db.is_transient(exc):
            raise self.retry(exc=exc, countdown=backoff(self.request.retries)) from exc
        raise
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
