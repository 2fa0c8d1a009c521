"""Per-user quest state: the (user, quest) rows workers lock, progress per period, earned
rewards, claim keys."""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Amount, Base, Id, JsonData, UTCDateTime, utcnow


class UserQuestProgress(Base):
    """Lifetime state of one user on one quest; the row a worker locks before it touches any of
    the quest's period rows."""

    __tablename__ = "user_quest_progress"
    __table_args__ = (
        CheckConstraint("completions >= 0", name="completions_non_negative"),
        CheckConstraint("best_streak >= 0", name="best_streak_non_negative"),
        CheckConstraint("streak_completions >= 0", name="streak_completions_non_negative"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"), primary_key=True)
    quest_id: Mapped[int] = mapped_column(ForeignKey("quests.quest_id"), primary_key=True)
    completions: Mapped[int] = mapped_column(default=0, server_default="0")
    # consecutive quests: the qualifying period indexes (sorted), the longest run ever and
    # the completions the runs have earned.
    streak_periods: Mapped[list[int]] = mapped_column(JsonData, default=list)
    best_streak: Mapped[int] = mapped_column(default=0, server_default="0")
    streak_completions: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class QuestPeriodProgress(Base):
    """Progress of one user on one quest in one period ("" for quests without a period)."""

    __tablename__ = "user_quest_periods"
    __table_args__ = (
        CheckConstraint("progress >= 0", name="progress_non_negative"),
        CheckConstraint("completions >= 0", name="completions_non_negative"),
    )

    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"), primary_key=True)
    quest_id: Mapped[int] = mapped_column(ForeignKey("quests.quest_id"), primary_key=True)
    period_key: Mapped[str] = mapped_column(String(16), primary_key=True)
    progress: Mapped[Decimal] = mapped_column(Amount, default=Decimal(0))
    completions: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RewardStatus(enum.StrEnum):
    """An earned reward waits to be claimed, was credited to the wallet, or expired."""

    NOT_CLAIMED = "not_claimed"
    CLAIMED = "claimed"
    # Shown when an unclaimed reward is past expires_at; stored once a claim meets it.
    EXPIRED = "expired"


class UserReward(Base):
    """One row per earned reward; (user, quest, completion_no) makes a double grant impossible.
    `items` is the bundle; `reward_item`/`reward_qty` repeat its first item for v1 clients."""

    __tablename__ = "user_rewards"
    __table_args__ = (
        UniqueConstraint("user_id", "quest_id", "completion_no", name="uq_user_rewards_completion"),
        CheckConstraint("completion_no >= 1", name="completion_no_positive"),
        CheckConstraint("reward_qty >= 1", name="reward_qty_positive"),
        CheckConstraint("status IN ('not_claimed', 'claimed', 'expired')", name="status_valid"),
        CheckConstraint(
            "(status = 'claimed') = (claimed_at IS NOT NULL)", name="claimed_at_matches_status"
        ),
        Index("ix_user_rewards_user_earned", "user_id", "user_reward_id"),
    )

    user_reward_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"))
    quest_id: Mapped[int] = mapped_column(ForeignKey("quests.quest_id"))
    completion_no: Mapped[int]
    reward_item: Mapped[str] = mapped_column(String(32))
    reward_qty: Mapped[int]
    items: Mapped[list[dict[str, Any]]] = mapped_column(JsonData)
    status: Mapped[str] = mapped_column(String(16), default=RewardStatus.NOT_CLAIMED)
    earned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
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
