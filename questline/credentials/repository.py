"""Queries on API keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from models import ApiKey


def add(
    session: Session, *, name: str, scopes: Sequence[str], key_hash: str, created_by: int | None
) -> ApiKey:
    key = ApiKey(name=name, scopes=list(scopes), key_hash=key_hash, created_by=created_by)
    session.add(key)
    session.flush()
    return key


def live(session: Session) -> Sequence[ApiKey]:
    """Keys not revoked, oldest first."""
    return session.scalars(
        select(ApiKey).where(ApiKey.revoked_at.is_(None)).order_by(ApiKey.key_id)
    ).all()


def live_by_hash(session: Session, key_hash: str) -> Row[int, list[str]] | None:
    """(key_id, scopes) of the live key with this hash: one lookup on the unique index,
    and plain columns rather than an ORM object (it runs on every event batch)."""
    return session.execute(
        select(ApiKey.key_id, ApiKey.scopes).where(
            ApiKey.key_hash == key_hash, ApiKey.revoked_at.is_(None)
        )
    ).one_or_none()


def live_by_id(session: Session, key_id: int) -> int | None:
    """The key's id if it is live, else None."""
    return session.scalar(
        select(ApiKey.key_id).where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
    )


def revoke(session: Session, key_id: int, *, now: datetime) -> bool:
    """Revoke a live key; False when there is no such live key."""
    revoked = session.execute(
        update(ApiKey)
        .where(ApiKey.key_id == key_id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=now)
        .returning(ApiKey.key_id)
    ).scalar_one_or_none()
    return revoked is not None
