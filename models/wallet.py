"""Wallets of any item, and the ledger of every credit that made them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, UTCDateTime, utcnow


class WalletBalance(Base):
    """One item of one user's wallet. The row the claim and grant paths update last."""

    __tablename__ = "wallets"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_non_negative"),)

    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"), primary_key=True)
    item: Mapped[str] = mapped_column(String(32), primary_key=True)
    balance: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class LedgerEntry(Base):
    """One credit to a wallet. `source` names what paid it (e.g. "user_reward:42"); with the
    item it is unique, so the same reward can never be credited twice."""

    __tablename__ = "wallet_ledger"
    __table_args__ = (
        UniqueConstraint("source", "item", name="uq_wallet_ledger_source_item"),
        CheckConstraint("qty >= 1", name="qty_positive"),
        Index("ix_wallet_ledger_user", "user_id", "ledger_id"),
    )

    ledger_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"))
    item: Mapped[str] = mapped_column(String(32))
    qty: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
