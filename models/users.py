"""Players, admins and their refresh tokens."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    String,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, UTCDateTime, utcnow


class UserStatus(enum.StrEnum):
    """Where a user stands: new until the first sign-in; a ban is final."""

    NEW = "new"
    NOT_NEW = "not_new"
    BANNED = "banned"


class Role(enum.StrEnum):
    PLAYER = "player"
    ADMIN = "admin"


def _one_of(column: str, values: type[enum.StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class User(Base):
    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint(_one_of("status", UserStatus), name="status_valid"),
        CheckConstraint(_one_of("role", Role), name="role_valid"),
        # Names are unique without regard to case.
        Index("uq_users_user_name_lower", func.lower(literal_column("user_name")), unique=True),
        # The banned ids each API process keeps in memory (questline.users.bans).
        Index(
            "ix_users_banned",
            "user_id",
            postgresql_where=text("status = 'banned'"),
            sqlite_where=text("status = 'banned'"),
        ),
    )

    user_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    user_name: Mapped[str] = mapped_column(String(32))
    password_hash: Mapped[str] = mapped_column(String(255))
    # Plain strings in the database; compare them with UserStatus and Role members.
    status: Mapped[str] = mapped_column(
        String(16), default=UserStatus.NEW, server_default=UserStatus.NEW.value
    )
    role: Mapped[str] = mapped_column(
        String(16), default=Role.PLAYER, server_default=Role.PLAYER.value
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # IANA zone stamped on each event the user makes; gold and diamond live in `wallets`.
    timezone: Mapped[str] = mapped_column(String(64), default="UTC", server_default="UTC")


class BanState(Base):
    """One row: the ban version. Every ban bumps it in its own transaction, so a reader
    that sees version N and then reads the banned users sees every ban up to N."""

    __tablename__ = "ban_state"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class RefreshToken(Base):
    """An opaque refresh token, stored only as its SHA-256; one family per login."""

    __tablename__ = "refresh_tokens"

    token_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.user_id"), index=True)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
