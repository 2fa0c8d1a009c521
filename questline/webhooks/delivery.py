"""The webhook task's work, in its own short transactions: take an attempt, send it with
no transaction open, record the answer; and the timer's sweep of due deliveries.
Celery tasks (workers/tasks.py) are thin callers."""

from __future__ import annotations

from dataclasses import dataclass

from questline.config import get_settings
from questline.infra import db
from questline.webhooks import sending, service


@dataclass(frozen=True)
class Report:
    """What one task did, as Flower and the log show it."""

    delivery_id: int
    webhook_id: int | None
    outcome: str  # delivered, retry, failed, stale or skipped
    attempt: int | None = None
    status_code: int | None = None
    error: str | None = None
    seconds: float | None = None


def deliver(delivery_id: int) -> Report:
    """Make the next attempt of a delivery if it is due and no other worker is on it."""
    settings = get_settings()
    with db.transaction() as session:
        taken = service.start_attempt(session, delivery_id)
    if isinstance(taken, service.Skipped):
        return Report(delivery_id, None, "skipped", error=taken.reason)
    answer = sending.send(
        taken,
        timeout=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_allow_private,
    )
    with db.transaction() as session:
        outcome = service.finish_attempt(session, taken, answer)
    return Report(
        delivery_id=delivery_id,
        webhook_id=taken.webhook_id,
        outcome=outcome,
        attempt=taken.number,
        status_code=answer.status_code,
        error=answer.error,
        seconds=round(answer.seconds, 3),
    )


def enqueue_due() -> int:
    """Send task messages for the deliveries that are due (retries, lost messages)."""
    with db.transaction() as session:
        return service.enqueue_due(session)
