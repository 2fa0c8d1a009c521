"""The quest catalog: rewards and the quests that grant them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from models.base import Base, Id, UTCDateTime, utcnow


class Reward(Base):
    __tablename__ = "rewards"
    __table_args__ = (
        CheckConstraint("reward_item IN ('gold', 'diamond')", name="reward_item_valid"),
        CheckConstraint("reward_qty >= 1", name="reward_qty_positive"),
    )

    reward_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    reward_name: Mapped[str] = mapped_column(String(100))
    reward_item: Mapped[str] = mapped_column(String(16))
    reward_qty: Mapped[int]


class Quest(Base):
    __tablename__ = "quests"
    __table_args__ = (
        CheckConstraint("streak >= 1", name="streak_positive"),
        CheckConstraint("duplication >= 1", name="duplication_positive"),
    )

    quest_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    reward_id: Mapped[int] = mapped_column(ForeignKey("rewards.reward_id"))
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    auto_claim: Mapped[bool] = mapped_column(default=False)
    streak: Mapped[int]
    duplication: Mapped[int]
    active: Mapped[bool] = mapped_column(default=True, server_default="true")
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
