"""Webhook endpoints and their deliveries: an outbox of its own, written in the grant's
transaction and sent by the webhook task (questline.webhooks)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, JsonData, UTCDateTime, utcnow


class WebhookEventType(enum.StrEnum):
    """What a webhook can subscribe to; each is one kind of history item."""

    QUEST_COMPLETED = "quest.completed"
    REWARD_EARNED = "reward.earned"
    REWARD_CLAIMED = "reward.claimed"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


PENDING_DELIVERIES = text("status = 'pending'")


class Webhook(Base):
    """An endpoint that receives the occurrences of the event types it subscribes to.
    The secret is kept as given (it signs every delivery); deleted endpoints stay for
    the record of their deliveries."""

    __tablename__ = "webhooks"

    webhook_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    events: Mapped[list[str]] = mapped_column(JsonData, default=list)
    secret: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.user_id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One occurrence (a history item) for one endpoint, until it is delivered or failed.

    `next_attempt_at` is when the next attempt is due; `sending_until` is the lease of
    the attempt under way (a worker killed mid-send leaves it to expire); `enqueued_at`
    says a task message is out for it (cleared when a task takes it), so the timer only
    sends another when that message looks lost."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        # One delivery per endpoint and occurrence, however the grant is retried.
        UniqueConstraint("webhook_id", "event_id", name="uq_webhook_deliveries_occurrence"),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
        # The timer's scan: only pending rows, by due time.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=PENDING_DELIVERIES,
            sqlite_where=PENDING_DELIVERIES,
        ),
    )

    delivery_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.webhook_id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("events.event_id"))
    event_type: Mapped[str] = mapped_column(String(32))
    # The whole body: {"id", "type", "created_at", "data"}; "id" is the webhook-id.
    payload: Mapped[dict[str, Any]] = mapped_column(JsonData)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_status_code: Mapped[int | None] = mapped_column()
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    sending_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
