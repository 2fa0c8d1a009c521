"""Service credentials: API keys that game servers use to send events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, Id, JsonData, UTCDateTime, utcnow


class ApiKey(Base):
    """An API key, stored only as the SHA-256 of its secret (a 256-bit random string, so a
    fast hash is enough). Revoked keys stay for the record."""

    __tablename__ = "api_keys"

    key_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JsonData, default=list)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.user_id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
