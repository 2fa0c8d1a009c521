"""Per-user quest state: progress rows (the rows workers lock), earned rewards, claim keys."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, JsonData, UTCDateTime, utcnow


class RewardStatus(enum.StrEnum):
    """An earned reward waits to be claimed, or was credited to the wallet."""

    NOT_CLAIMED = "not_claimed"
    CLAIMED = "claimed"


class UserQuestProgress(Base):
    __tablename__ = "user_quest_progress"
    __table_args__ = (
        CheckConstraint("curr_streak >= 0", name="curr_streak_non_negative"),
        CheckConstraint("completions >= 0", name="completions_non_negative"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"), primary_key=True)
    quest_id: Mapped[int] = mapped_column(ForeignKey("quests.quest_id"), primary_key=True)
    curr_streak: Mapped[int] = mapped_column(default=0, server_default="0")
    completions: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserReward(Base):
    """One row per earned reward; (user, quest, completion_no) makes a double grant impossible."""

    __tablename__ = "user_rewards"
    __table_args__ = (
        UniqueConstraint("user_id", "quest_id", "completion_no", name="uq_user_rewards_completion"),
        CheckConstraint("completion_no >= 1", name="completion_no_positive"),
        CheckConstraint("reward_qty >= 1", name="reward_qty_positive"),
        CheckConstraint("reward_item IN ('gold', 'diamond')", name="reward_item_valid"),
        CheckConstraint("status IN ('not_claimed', 'claimed')", name="status_valid"),
        CheckConstraint(
            "(status = 'claimed') = (claimed_at IS NOT NULL)", name="claimed_at_matches_status"
        ),
        Index("ix_user_rewards_user_earned", "user_id", "user_reward_id"),
    )

    user_reward_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"))
    quest_id: Mapped[int] = mapped_column(ForeignKey("quests.quest_id"))
    completion_no: Mapped[int]
    reward_item: Mapped[str] = mapped_column(String(16))
    reward_qty: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default=RewardStatus.NOT_CLAIMED)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdempotencyKey(Base):
    """The first answer to a claim sent with an Idempotency-Key, replayed on retries."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(String(255))
    status_code: Mapped[int]
    response: Mapped[dict[str, Any]] = mapped_column(JsonData)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, server_default=text("CURRENT_TIMESTAMP"), index=True
    )
