"""The webhook task's work, in its own short transactions: take an attempt, send it with
no transaction open, record the answer; and the timer's sweep of due deliveries.
Celery tasks (workers/tasks.py) are thin callers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from questline.config import get_settings
from questline.infra import db
from questline.webhooks import sending, service


@dataclass(frozen=True)
class Report:
    """What one task did, as Flower and the log show it: the attempt of its own delivery,
    and in `batch` those of the other deliveries it sent to the same endpoint."""

    delivery_id: int
    webhook_id: int | None
    outcome: str  # delivered, retry, failed, stale, not tried or skipped
    attempt: int | None = None
    status_code: int | None = None
    error: str | None = None
    seconds: float | None = None
    batch: tuple[Report, ...] = ()

    def attempts(self) -> list[Report]:
        """Every attempt the task made (none if it skipped)."""
        own = [] if self.outcome in ("skipped", service.NOT_TRIED) else [self]
        return own + [r for r in self.batch if r.outcome != service.NOT_TRIED]


def deliver(delivery_id: int) -> Report:
    """Make the next attempt of a delivery if it is due and no other worker is on it,
    with those of other due deliveries to the same endpoint (service.start_attempts)."""
    settings = get_settings()
    with db.transaction() as session:
        taken = service.start_attempts(session, delivery_id)
    if isinstance(taken, service.Skipped):
        return Report(delivery_id, None, "skipped", error=taken.reason)
    answers = sending.send_batch(
        taken,
        timeout=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_allow_private,
    )
    with db.transaction() as session:
        outcomes = service.finish_attempts(session, taken, answers)
    reports = [
        Report(
            delivery_id=attempt.delivery_id,
            webhook_id=attempt.webhook_id,
            outcome=outcome,
            attempt=attempt.number if answer is not None else None,
            status_code=answer.status_code if answer is not None else None,
            error=answer.error if answer is not None else None,
            seconds=round(answer.seconds, 3) if answer is not None else None,
        )
        for attempt, answer, outcome in zip(taken.attempts, answers, outcomes, strict=True)
    ]
    return dataclasses.replace(reports[0], batch=tuple(reports[1:]))


def enqueue_due() -> int:
    """Send task messages for the deliveries that are due (retries, lost messages)."""
    with db.transaction() as session:
        return service.enqueue_due(session)
