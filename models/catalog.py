"""The quest catalog: rewards (bundles of items) and the quests that grant them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, Id, JsonData, UTCDateTime, utcnow


class Reward(Base):
    """A bundle of items. `reward_item`/`reward_qty` repeat its first item for v1 clients."""

    __tablename__ = "rewards"
    __table_args__ = (CheckConstraint("reward_qty >= 1", name="reward_qty_positive"),)

    reward_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    reward_name: Mapped[str] = mapped_column(String(100))
    reward_item: Mapped[str] = mapped_column(String(32))
    reward_qty: Mapped[int]
    # [{"item": "gold", "qty": 100}, ...], 1-10 entries, first = reward_item/reward_qty.
    items: Mapped[list[dict[str, Any]]] = mapped_column(JsonData)


class Quest(Base):
    """A quest definition. v1's columns keep their meaning; the v2 columns default to v1's rule
    (a count of sign-ins, no period). `streak` is the target."""

    __tablename__ = "quests"
    __table_args__ = (
        CheckConstraint("streak >= 1", name="streak_positive"),
        CheckConstraint("duplication IS NULL OR duplication >= 1", name="duplication_positive"),
        CheckConstraint(
            "max_per_period IS NULL OR max_per_period >= 1", name="max_per_period_positive"
        ),
        CheckConstraint("grace_periods >= 0", name="grace_periods_non_negative"),
        CheckConstraint("measure IN ('count', 'sum', 'consecutive')", name="measure_valid"),
        CheckConstraint("period IN ('none', 'day', 'week', 'month')", name="period_valid"),
    )

    quest_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.reward_id"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    auto_claim: Mapped[bool] = mapped_column(default=False)
    streak: Mapped[int]
    duplication: Mapped[int | None]
    active: Mapped[bool] = mapped_column(default=True, server_default="true")
    # {"event": "sign_in", "where": {...}}
    trigger: Mapped[dict[str, Any]] = mapped_column(JsonData)
    measure: Mapped[str] = mapped_column(String(16), default="count", server_default="count")
    period: Mapped[str] = mapped_column(String(8), default="none", server_default="none")
    reset_at: Mapped[str] = mapped_column(String(5), default="00:00", server_default="00:00")
    week_starts_on: Mapped[str] = mapped_column(
        String(9), default="monday", server_default="monday"
    )
    timezone: Mapped[str] = mapped_column(String(64), default="user", server_default="user")
    max_per_period: Mapped[int | None]
    grace_periods: Mapped[int] = mapped_column(default=0, server_default="0")
    requires: Mapped[list[int]] = mapped_column(JsonData, default=list)
    starts_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claim_within_seconds: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    reward: Mapped[Reward] = relationship(lazy="joined")


class CatalogState(Base):
    """One row: the catalog version. Every catalog write bumps it in its own
    transaction, so a reader that sees version N sees every write up to N, and
    cached copies are keyed by it (questline.catalog.cache)."""

    __tablename__ = "catalog_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)
