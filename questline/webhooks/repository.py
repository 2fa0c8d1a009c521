"""Queries on webhooks and their deliveries.

Lock order: a webhook row (FOR NO KEY UPDATE, which a grant's foreign-key check does
not wait for), then its delivery rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, case, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from models import Base, DeliveryStatus, Webhook, WebhookDelivery


def live_webhooks(session: Session) -> Sequence[Webhook]:
    """Webhooks not deleted, oldest first."""
    return session.scalars(
        select(Webhook).where(Webhook.deleted_at.is_(None)).order_by(Webhook.webhook_id)
    ).all()


def subscriptions(session: Session) -> list[tuple[int, list[str]]]:
    """(webhook_id, events) of every live webhook: what a grant reads to fan out."""
    rows = session.execute(
        select(Webhook.webhook_id, Webhook.events).where(Webhook.deleted_at.is_(None))
    ).all()
    return [(int(r[0]), list(r[1])) for r in rows]


def add_webhook(
    session: Session, *, url: str, events: list[str], secret: str, created_by: int | None
) -> Webhook:
    webhook = Webhook(url=url, events=events, secret=secret, created_by=created_by)
    session.add(webhook)
    session.flush()
    return webhook


def get_webhook(session: Session, webhook_id: int, *, for_update: bool = False) -> Webhook | None:
    """A live webhook; for_update takes FOR NO KEY UPDATE (grants inserting deliveries
    for it do not wait)."""
    query = select(Webhook).where(Webhook.webhook_id == webhook_id, Webhook.deleted_at.is_(None))
    if for_update:
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    return session.scalars(query).one_or_none()


def add_deliveries(session: Session, rows: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """Insert deliveries; (delivery_id, webhook_id) of each, in the rows' order."""
    if not rows:
        return []
    table = Base.metadata.tables[WebhookDelivery.__tablename__]
    inserted = session.execute(
        insert(table).returning(
            table.c.delivery_id, table.c.webhook_id, sort_by_parameter_order=True
        ),
        list(rows),
    )
    return [(int(r[0]), int(r[1])) for r in inserted]


def list_deliveries(
    session: Session, webhook_id: int, *, status: str | None, limit: int, before: int | None
) -> Sequence[WebhookDelivery]:
    """A webhook's deliveries, newest first."""
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id)
    if status is not None:
        query = query.where(WebhookDelivery.status == status)
    if before is not None:
        query = query.where(WebhookDelivery.delivery_id < before)
    return session.scalars(query.order_by(WebhookDelivery.delivery_id.desc()).limit(limit)).all()


def get_delivery(
    session: Session, delivery_id: int, *, for_update: bool = False, skip_locked: bool = False
) -> WebhookDelivery | None:
    query = select(WebhookDelivery).where(WebhookDelivery.delivery_id == delivery_id)
    if for_update:
        # The locked row as it is now, not as this session may have read it before.
        query = query.with_for_update(skip_locked=skip_locked).execution_options(
            populate_existing=True
        )
    return session.scalars(query).one_or_none()


def in_flight(session: Session, webhook_id: int, *, now: datetime) -> int:
    """Batches of attempts under way to a webhook. A batch leases its deliveries with
    one expiry instant, and batches to one endpoint are taken in turns under its row
    lock, each at a later instant: so they count as the distinct running leases."""
    return int(
        session.scalar(
            select(func.count(WebhookDelivery.sending_until.distinct())).where(
                WebhookDelivery.webhook_id == webhook_id,
                WebhookDelivery.status == DeliveryStatus.PENDING,
                WebhookDelivery.sending_until > now,
            )
        )
        or 0
    )


def latest_lease(session: Session, webhook_id: int) -> datetime | None:
    """The latest lease expiry among a webhook's pending deliveries."""
    found: datetime | None = session.scalar(
        select(func.max(WebhookDelivery.sending_until)).where(
            WebhookDelivery.webhook_id == webhook_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
    )
    return found


def endpoint_load(
    session: Session, *, now: datetime, message_lost_before: datetime
) -> dict[int, int]:
    """Per webhook with pending deliveries: batches under way plus task messages out
    (not yet presumed lost) for deliveries no batch holds, i.e. the slots it is using."""
    leased = WebhookDelivery.sending_until > now
    queued = and_(
        or_(WebhookDelivery.sending_until.is_(None), WebhookDelivery.sending_until <= now),
        WebhookDelivery.enqueued_at > message_lost_before,
    )
    rows = session.execute(
        select(
            WebhookDelivery.webhook_id,
            func.count(case((leased, WebhookDelivery.sending_until)).distinct()),
            func.count(case((queued, 1))),
        )
        .where(WebhookDelivery.status == DeliveryStatus.PENDING, or_(leased, queued))
        .group_by(WebhookDelivery.webhook_id)
    ).all()
    return {int(r[0]): int(r[1]) + int(r[2]) for r in rows}


def endpoints_with_due(session: Session, *, now: datetime) -> list[int]:
    """Webhooks that have a pending delivery due."""
    rows = session.execute(
        select(WebhookDelivery.webhook_id)
        .where(
            WebhookDelivery.status == DeliveryStatus.PENDING,
            WebhookDelivery.next_attempt_at <= now,
        )
        .distinct()
    ).all()
    return [int(r[0]) for r in rows]


def lock_due(
    session: Session,
    *,
    webhook_id: int,
    now: datetime,
    message_lost_before: datetime | None,
    limit: int,
    besides: int | None = None,
) -> list[WebhookDelivery]:
    """A webhook's pending deliveries that are due and not being sent, locked (skipping
    locked ones), oldest due first. With `message_lost_before`, only those with no task
    message out (or one sent before it, presumed lost); `besides` is left out."""
    query = select(WebhookDelivery).where(
        WebhookDelivery.webhook_id == webhook_id,
        WebhookDelivery.status == DeliveryStatus.PENDING,
        WebhookDelivery.next_attempt_at <= now,
        or_(WebhookDelivery.sending_until.is_(None), WebhookDelivery.sending_until <= now),
    )
    if message_lost_before is not None:
        query = query.where(
            or_(
                WebhookDelivery.enqueued_at.is_(None),
                WebhookDelivery.enqueued_at <= message_lost_before,
            )
        )
    if besides is not None:
        query = query.where(WebhookDelivery.delivery_id != besides)
    query = (
        query.order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.delivery_id)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(query).all())


def lock_deliveries(session: Session, delivery_ids: Sequence[int]) -> dict[int, WebhookDelivery]:
    """Deliveries by id, locked in id order."""
    rows = session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.delivery_id.in_(sorted(delivery_ids)))
        .order_by(WebhookDelivery.delivery_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).all()
    return {d.delivery_id: d for d in rows}


def delete_settled(session: Session, *, written_before: datetime, limit: int) -> int:
    """Delete up to `limit` delivered or failed deliveries written before a time."""
    doomed = (
        select(WebhookDelivery.delivery_id)
        .where(
            WebhookDelivery.status != DeliveryStatus.PENDING,
            WebhookDelivery.created_at < written_before,
        )
        .limit(limit)
        .scalar_subquery()
    )
    result = session.execute(
        delete(WebhookDelivery).where(WebhookDelivery.delivery_id.in_(doomed))
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def delete_settled_of_events(session: Session, event_ids: Select[Any]) -> int:
    """Delete the delivered or failed deliveries of some events (a query of their ids);
    pending ones stay, and keep their events."""
    result = session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.event_id.in_(event_ids.scalar_subquery()),
            WebhookDelivery.status != DeliveryStatus.PENDING,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def fail_pending(session: Session, webhook_id: int, *, error: str) -> int:
    """Mark a webhook's pending deliveries failed; how many."""
    result = session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.webhook_id == webhook_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(status=DeliveryStatus.FAILED, last_error=error, next_attempt_at=None)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def delivery_counts(session: Session) -> dict[str, int]:
    """Deliveries by status, for operators and the fault-injection run."""
    rows = session.execute(
        select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
    ).all()
    return {str(r[0]): int(r[1]) for r in rows}
