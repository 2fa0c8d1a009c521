"""The event log: every user's history, and the sign-in outbox the workers drain."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, JsonData, UTCDateTime, utcnow


class EventType(enum.StrEnum):
    SIGN_IN = "sign_in"
    QUEST_PROGRESS = "quest_progress"
    QUEST_COMPLETED = "quest_completed"
    REWARD_EARNED = "reward_earned"
    REWARD_CLAIMED = "reward_claimed"


PENDING_SIGN_INS = text("type = 'sign_in' AND processed_at IS NULL")


class Event(Base):
    """A history entry. Sign-in events are also outbox rows: processed_at, attempts, dead_at."""

    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint(
            "type IN ('sign_in', 'quest_progress', 'quest_completed', "
            "'reward_earned', 'reward_claimed')",
            name="type_valid",
        ),
        CheckConstraint("attempts >= 0", name="attempts_non_negative"),
        Index("ix_events_user_history", "user_id", "event_id"),
        # The outbox: only unprocessed sign-ins, so the sweeper's scan stays small.
        Index(
            "ix_events_pending_sign_ins",
            "event_id",
            postgresql_where=PENDING_SIGN_INS,
            sqlite_where=PENDING_SIGN_INS,
        ),
    )

    event_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"))
    type: Mapped[str] = mapped_column(String(32))
    quest_id: Mapped[int | None] = mapped_column(ForeignKey("quests.quest_id"))
    data: Mapped[dict[str, Any]] = mapped_column(JsonData, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    dead_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
