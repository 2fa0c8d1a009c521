"""Queries on users and refresh tokens."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Row, func, select, update
from sqlalchemy.orm import Session

from models import RefreshToken, User

USER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")


def get_by_id(session: Session, user_id: int, *, for_update: bool = False) -> User | None:
    stmt = select(User).where(User.user_id == user_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def get_by_name(session: Session, user_name: str) -> User | None:
    if not USER_NAME_RE.match(user_name):
        return None  # cannot exist; also keeps NUL bytes and the like away from SQL
    return session.scalars(
        select(User).where(func.lower(User.user_name) == user_name.lower())
    ).one_or_none()


def mark_signed_in(session: Session, user_id: int, *, now: datetime) -> str | None:
    """Record a sign-in on the user row; the user's role, or None when (now) banned."""
    result = session.execute(
        update(User)
        .where(User.user_id == user_id, User.status != "banned")
        .values(
            status="not_new",
            last_login_at=now,
        )
        .returning(User.role)
    )
    return result.scalar_one_or_none()


def use_refresh_token(session: Session, token_hash: str, *, now: datetime) -> Row[int, str] | None:
    """Mark a live token used, in one statement: (user_id, family_id), or None when the
    token is unknown, already used, revoked or expired (the caller finds out which)."""
    return session.execute(
        update(RefreshToken)
        .where(
            RefreshToken.token_hash == token_hash,
            RefreshToken.used_at.is_(None),
            RefreshToken.revoked_at.is_(None),
            RefreshToken.expires_at > now,
        )
        .values(used_at=now)
        .returning(RefreshToken.user_id, RefreshToken.family_id)
    ).one_or_none()


def get_refresh_token(
    session: Session, token_hash: str, *, for_update: bool = False
) -> RefreshToken | None:
    stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def revoke_family(session: Session, family_id: str, *, now: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def revoke_all_for_user(session: Session, user_id: int, *, now: datetime) -> None:
    session.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
