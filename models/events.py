"""The event log: every user's history, and the outbox of inputs the workers apply.

Inputs are sign-ins and gameplay events from game servers: they carry `occurred_at`
(and the user's zone, `tz`) and wait with `processed_at` NULL until a worker applies
them. History entries the engine writes (quest progress, completions, rewards) carry
neither.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Amount, Base, Id, JsonData, UTCDateTime, utcnow


class EventType(enum.StrEnum):
    """The types Questline itself records; gameplay events bring their own names."""

    SIGN_IN = "sign_in"
    QUEST_PROGRESS = "quest_progress"
    QUEST_COMPLETED = "quest_completed"
    REWARD_EARNED = "reward_earned"
    REWARD_CLAIMED = "reward_claimed"


PENDING_INPUTS = text("occurred_at IS NOT NULL AND processed_at IS NULL")
WITH_IDEMPOTENCY_KEY = text("idempotency_key IS NOT NULL")


class Event(Base):
    """A history entry, or an input (sign-in, gameplay event) that is also an outbox row:
    processed_at, attempts, last_error, dead_at."""

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_events_user_history", "user_id", "event_id"),
        # The outbox: only unprocessed inputs, so the drain's and sweeper's scans stay small.
        Index(
            "ix_events_pending_inputs",
            "event_id",
            postgresql_where=PENDING_INPUTS,
            sqlite_where=PENDING_INPUTS,
        ),
        # A game server's retry of the same event is recognised, per user. Partial: history
        # rows and sign-ins carry no key.
        Index(
            "uq_events_user_idempotency_key",
            "user_id",
            "idempotency_key",
            unique=True,
            postgresql_where=WITH_IDEMPOTENCY_KEY,
            sqlite_where=WITH_IDEMPOTENCY_KEY,
        ),
    )

    event_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    # No foreign keys on this log (migration 0004): a check per history row cost more than
    # half of writing it, and the writers guarantee what it checked (users and quests are
    # never deleted, API keys only revoked).
    user_id: Mapped[int] = mapped_column(Id)
    type: Mapped[str] = mapped_column(String(64))
    quest_id: Mapped[int | None] = mapped_column(Id)
    data: Mapped[dict[str, Any]] = mapped_column(JsonData, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Inputs only.
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tz: Mapped[str | None] = mapped_column(String(64))
    value: Mapped[Decimal | None] = mapped_column(Amount)
    attrs: Mapped[dict[str, Any] | None] = mapped_column(JsonData)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    api_key_id: Mapped[int | None] = mapped_column(Id)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
