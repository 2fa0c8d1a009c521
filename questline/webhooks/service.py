"""Webhooks: registering endpoints, writing deliveries in the grant's transaction, and
the two short transactions around each attempt. Never commits.

A delivery is a row in the grant's own transaction, so it exists exactly when the
grant does. Its task message (DeliveriesQueued, sent after the commit) is only a
wake-up: the timer (enqueue_due) sends the due ones whose message is out no longer,
so a lost message, a killed worker or a restarted Redis delays a delivery, never loses
it. An attempt takes the row under FOR UPDATE SKIP LOCKED, counts itself and takes a
lease (sending_until) in one transaction, sends with no transaction open, and records
the answer in another: two workers never send the same attempt, and a worker killed
mid-send leaves a lease that expires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from models import DeliveryStatus, EventType, Webhook, WebhookDelivery, WebhookEventType
from models.base import utcnow
from questline.config import get_settings
from questline.errors import NotFound
from questline.infra.after_commit import after_commit
from questline.webhooks import addresses, repository, schedule, signing

# The history item behind each event type a webhook can subscribe to.
EVENT_TYPES: dict[str, WebhookEventType] = {
    EventType.QUEST_COMPLETED: WebhookEventType.QUEST_COMPLETED,
    EventType.REWARD_EARNED: WebhookEventType.REWARD_EARNED,
    EventType.REWARD_CLAIMED: WebhookEventType.REWARD_CLAIMED,
}
# Beyond the attempt's own timeout: resolving, connecting and recording the answer.
LEASE_MARGIN_SECONDS = 10.0
ERROR_LENGTH = 500


@dataclass(frozen=True)
class DeliveriesQueued:
    """Deliveries to send now: (delivery_id, webhook_id) each."""

    deliveries: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class NewWebhook:
    webhook: Webhook
    secret: str


# --- endpoints ----------------------------------------------------------------


def create(
    session: Session, *, url: str, events: Sequence[str], created_by: int | None = None
) -> NewWebhook:
    """Register an endpoint for some event types; its secret is returned this once."""
    settings = get_settings()
    addresses.check_registration(url, allow_private=settings.webhook_allow_private)
    ordered: list[str] = [t.value for t in WebhookEventType if t.value in set(events)]
    secret = signing.new_secret()
    webhook = repository.add_webhook(
        session, url=url, events=ordered, secret=secret, created_by=created_by
    )
    return NewWebhook(webhook=webhook, secret=secret)


def list_webhooks(session: Session) -> Sequence[Webhook]:
    return repository.live_webhooks(session)


def delete(session: Session, *, webhook_id: int) -> None:
    """Delete an endpoint: nothing more is sent to it (its pending deliveries fail)."""
    webhook = repository.get_webhook(session, webhook_id, for_update=True)
    if webhook is None:
        raise NotFound("webhook not found")
    webhook.deleted_at = utcnow()
    repository.fail_pending(session, webhook_id, error="webhook deleted")


def deliveries(
    session: Session,
    *,
    webhook_id: int,
    status: DeliveryStatus | None,
    limit: int = 100,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """A webhook's deliveries, newest first."""
    if repository.get_webhook(session, webhook_id) is None:
        raise NotFound("webhook not found")
    rows = repository.list_deliveries(
        session, webhook_id, status=status, limit=limit, before=before
    )
    return [delivery_view(d) for d in rows]


def delivery_view(d: WebhookDelivery) -> dict[str, Any]:
    return {
        "delivery_id": d.delivery_id,
        "webhook_id": d.webhook_id,
        "message_id": d.payload.get("id"),
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_at,
        "created_at": d.created_at,
        "delivered_at": d.delivered_at,
    }


def retry(session: Session, *, webhook_id: int, delivery_id: int) -> None:
    """Try a delivery again now, whatever its status: one more attempt, with the same
    webhook-id (a failed one that fails again is failed again)."""
    if repository.get_webhook(session, webhook_id) is None:
        raise NotFound("webhook not found")
    delivery = repository.get_delivery(session, delivery_id, for_update=True)
    if delivery is None or delivery.webhook_id != webhook_id:
        raise NotFound("delivery not found")
    now = utcnow()
    if delivery.sending_until is not None and delivery.sending_until > now:
        return  # an attempt is under way right now
    delivery.status = DeliveryStatus.PENDING
    delivery.next_attempt_at = now
    delivery.enqueued_at = now
    after_commit(session, DeliveriesQueued(((delivery_id, webhook_id),)))


# --- grants -------------------------------------------------------------------


def announce(
    session: Session,
    history: Sequence[Mapping[str, Any]],
    event_ids: Sequence[int],
    subscribed: Sequence[tuple[int, list[str]]],
) -> int:
    """Write one delivery per subscribed webhook for each history entry of a webhook
    event type (`event_ids` are the entries' ids), in the caller's transaction, and send
    them after its commit. Returns how many were written."""
    now = utcnow()
    rows: list[dict[str, Any]] = []
    for entry, event_id in zip(history, event_ids, strict=True):
        kind = EVENT_TYPES.get(str(entry["type"]))
        if kind is None:
            continue
        body = payload(entry, event_id, kind)
        for webhook_id, events in subscribed:
            if kind.value in events:
                rows.append(
                    {
                        "webhook_id": webhook_id,
                        "event_id": event_id,
                        "event_type": kind.value,
                        "payload": body,
                        "status": DeliveryStatus.PENDING,
                        "attempts": 0,
                        "next_attempt_at": now,
                        "enqueued_at": None,
                        "created_at": now,
                    }
                )
    written = repository.add_deliveries(session, rows)
    if written:
        after_commit(session, DeliveriesQueued(wake_ups(written)))
    return len(written)


def wake_ups(written: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    """The deliveries of a grant to send task messages for: per endpoint, one per batch
    of them, at most its cap. Each task takes a batch of whatever of the endpoint is
    due, so the others need no message of their own (they are written with none out,
    and the batches that finish and the timer take them)."""
    settings = get_settings()
    by_webhook: dict[int, list[int]] = {}
    for delivery_id, webhook_id in written:
        by_webhook.setdefault(webhook_id, []).append(delivery_id)
    chosen = []
    for webhook_id, ids in by_webhook.items():
        heads = ids[:: settings.webhook_batch_size][: settings.webhook_max_in_flight_per_endpoint]
        chosen += [(delivery_id, webhook_id) for delivery_id in heads]
    return tuple(chosen)


def message_id(event_id: int) -> str:
    """The webhook-id of an occurrence: the same for every attempt and every endpoint."""
    return f"msg_{event_id}"


def payload(entry: Mapping[str, Any], event_id: int, kind: WebhookEventType) -> dict[str, Any]:
    """The body of an occurrence's delivery: {"id", "type", "created_at", "data"}."""
    created: datetime = entry["created_at"]
    return {
        "id": message_id(event_id),
        "type": kind.value,
        "created_at": created.isoformat(),
        "data": {
            "event_id": event_id,
            "user_id": entry["user_id"],
            "quest_id": entry.get("quest_id"),
            **dict(entry.get("data") or {}),
        },
    }


# --- attempts -----------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One attempt taken by a worker: what to send, where, and its number."""

    delivery_id: int
    webhook_id: int
    url: str
    secret: str
    payload: dict[str, Any]
    number: int


@dataclass(frozen=True)
class Batch:
    """Attempts to one endpoint taken together under one lease, the task's own
    delivery first: the sender makes them one after another over one connection."""

    attempts: tuple[Attempt, ...]

    @property
    def webhook_id(self) -> int:
        return self.attempts[0].webhook_id

    @property
    def url(self) -> str:
        return self.attempts[0].url


@dataclass(frozen=True)
class Skipped:
    """Why a task took no attempt (another worker has it, it is done, not due, ...)."""

    reason: str


def lease_seconds() -> float:
    """How long a batch holds its deliveries: it starts attempts during its first
    webhook_timeout_seconds, the last one may take another as long, and a margin for
    resolving, connecting and recording the answers. A worker killed mid-batch leaves leases that
    expire after this."""
    return 2 * get_settings().webhook_timeout_seconds + LEASE_MARGIN_SECONDS


def _unavailable(delivery: WebhookDelivery, now: datetime) -> Skipped | None:
    if delivery.status != DeliveryStatus.PENDING:
        return Skipped(f"already {delivery.status}")
    if delivery.sending_until is not None and delivery.sending_until > now:
        return Skipped("an attempt is under way")
    if delivery.next_attempt_at is not None and delivery.next_attempt_at > now:
        return Skipped("not due yet")
    return None


def start_attempts(session: Session, delivery_id: int) -> Batch | Skipped:
    """Take the next attempt of a delivery if it is due and nobody is sending it, with
    up to webhook_batch_size - 1 more due deliveries of the same endpoint: count each
    attempt and lease them all (lease_seconds)."""
    settings = get_settings()
    now = utcnow()
    # A first look with no lock: the message of a delivery a batch already sent (the
    # usual case under load) costs one read.
    seen = repository.get_delivery(session, delivery_id)
    if seen is None:
        return Skipped("unknown delivery")
    early = _unavailable(seen, now)
    if early is not None:
        return early
    # The webhook's row first (as deleting one takes it), then the deliveries': batches
    # to one endpoint are taken in turns, so its count of batches under way is exact.
    webhook = repository.get_webhook(session, seen.webhook_id, for_update=True)
    delivery = repository.get_delivery(session, delivery_id, for_update=True, skip_locked=True)
    if delivery is None:
        return Skipped("locked by another worker")
    if webhook is None:
        # Deleting failed its pending deliveries; a grant that committed just after the
        # delete may still have written this one.
        if delivery.status == DeliveryStatus.PENDING:
            delivery.status = DeliveryStatus.FAILED
            delivery.last_error = "webhook deleted"
            delivery.next_attempt_at = None
        return Skipped("webhook deleted")
    late = _unavailable(delivery, now)
    if late is not None:
        return late
    delivery.enqueued_at = None  # this task took the message
    cap = settings.webhook_max_in_flight_per_endpoint
    if repository.in_flight(session, webhook.webhook_id, now=now) >= cap:
        # Not an attempt, and no message out: the next batch to this endpoint to finish
        # takes it, or the timer when the endpoint has a slot free.
        return Skipped(f"{cap} batches to this endpoint under way")
    more = repository.lock_due(
        session,
        webhook_id=webhook.webhook_id,
        now=now,
        message_lost_before=None,  # their messages, if any, will find them taken
        limit=settings.webhook_batch_size - 1,
        besides=delivery_id,
    )
    # One expiry instant per batch, later than any other of the endpoint's: in_flight
    # counts the batches by it.
    lease_until = now + timedelta(seconds=lease_seconds())
    latest = repository.latest_lease(session, webhook.webhook_id)
    if latest is not None and latest >= lease_until:
        lease_until = latest + timedelta(microseconds=1)
    attempts = []
    for d in (delivery, *more):
        d.attempts += 1
        d.sending_until = lease_until
        d.enqueued_at = None
        attempts.append(
            Attempt(
                delivery_id=d.delivery_id,
                webhook_id=webhook.webhook_id,
                url=webhook.url,
                secret=webhook.secret,
                payload=dict(d.payload),
                number=d.attempts,
            )
        )
    return Batch(tuple(attempts))


@dataclass(frozen=True)
class Answer:
    """What one attempt got: a 2xx, another status, or an error (no answer)."""

    status_code: int | None
    error: str | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


# What finish_attempts says of an attempt the batch did not make (it stopped first).
NOT_TRIED = "not tried"


def finish_attempts(session: Session, batch: Batch, answers: Sequence[Answer | None]) -> list[str]:
    """Record a batch's answers: each delivery delivered, retried later (next_attempt_at
    by backoff), or failed after its last attempt; give back uncounted the ones it did
    not try (None), due at once with no message out; and hand the slot the batch frees
    to the endpoint's next due delivery. The outcome of each attempt, in order."""
    locked = repository.lock_deliveries(session, [a.delivery_id for a in batch.attempts])
    outcomes = []
    for attempt, answer in zip(batch.attempts, answers, strict=True):
        delivery = locked.get(attempt.delivery_id)
        if answer is None:
            _give_back(delivery, attempt)
            outcomes.append(NOT_TRIED)
        else:
            outcomes.append(_record_answer(delivery, attempt, answer))
    _pass_slot_on(session, batch.webhook_id)
    return outcomes


def _give_back(delivery: WebhookDelivery | None, attempt: Attempt) -> None:
    if (
        delivery is not None
        and delivery.status == DeliveryStatus.PENDING
        and delivery.attempts == attempt.number
    ):
        delivery.attempts -= 1
        delivery.sending_until = None
        delivery.enqueued_at = None


def _pass_slot_on(session: Session, webhook_id: int) -> None:
    # Each batch that finishes sends the next one, so an endpoint with a backlog is
    # served by up to `cap` chains of batches, with no polling and no churn.
    now = utcnow()
    nxt = repository.lock_due(
        session, webhook_id=webhook_id, now=now, message_lost_before=None, limit=1
    )
    for delivery in nxt:
        delivery.enqueued_at = now
        after_commit(session, DeliveriesQueued(((delivery.delivery_id, webhook_id),)))


def _record_answer(delivery: WebhookDelivery | None, attempt: Attempt, answer: Answer) -> str:
    settings = get_settings()
    now = utcnow()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return "delivered" if answer.ok else "stale"
    delivery.last_status_code = answer.status_code
    if answer.ok:
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.last_error = None
        delivery.next_attempt_at = None
        delivery.sending_until = None
        return "delivered"
    if delivery.attempts != attempt.number:
        # Our lease ran out and a later attempt has started: its answer decides.
        return "stale"
    delivery.last_error = (answer.error or f"HTTP {answer.status_code}")[:ERROR_LENGTH]
    delivery.sending_until = None
    if delivery.attempts >= settings.webhook_max_attempts:
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        return "failed"
    wait = schedule.retry_delay(
        delivery.attempts,
        base_seconds=settings.webhook_retry_base_seconds,
        max_seconds=settings.webhook_retry_max_seconds,
    )
    delivery.next_attempt_at = now + timedelta(seconds=wait)
    return "retry"


def enqueue_due(session: Session) -> int:
    """Send a task message for due deliveries that have none out (a retry whose time has
    come, a lease a killed worker left) or whose message looks lost, each endpoint up to
    its free slots (the cap less its attempts under way and messages out); how many."""
    settings = get_settings()
    now = utcnow()
    lost_before = now - timedelta(seconds=settings.webhook_requeue_after_seconds)
    cap = settings.webhook_max_in_flight_per_endpoint
    load = repository.endpoint_load(session, now=now, message_lost_before=lost_before)
    sent: list[tuple[int, int]] = []
    for webhook_id in repository.endpoints_with_due(session, now=now):
        free = cap - load.get(webhook_id, 0)
        if free <= 0:
            continue
        due = repository.lock_due(
            session, webhook_id=webhook_id, now=now, message_lost_before=lost_before, limit=free
        )
        for delivery in due:
            delivery.enqueued_at = now
            sent.append((delivery.delivery_id, webhook_id))
    if sent:
        after_commit(session, DeliveriesQueued(tuple(sent)))
    return len(sent)


def counts(session: Session) -> dict[str, int]:
    """Deliveries by status."""
    return repository.delivery_counts(session)
