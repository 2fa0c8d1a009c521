"""Queries on users, their refresh tokens and the sign-in events they record."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import Row, func, insert, select, update
from sqlalchemy.orm import Session

from models import Event, EventType, RefreshToken, User

USER_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{3,32}$")


def get_by_id(session: Session, user_id: int, *, for_update: bool = False) -> User | None:
    stmt = select(User).where(User.user_id == user_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def set_timezone(session: Session, user_id: int, timezone: str) -> User | None:
    """Change a user's zone; the user, or None if there is none."""
    user = get_by_id(session, user_id)
    if user is not None:
        user.timezone = timezone
        session.flush()
    return user


def get_by_name(session: Session, user_name: str) -> User | None:
    if not USER_NAME_RE.fullmatch(user_name):
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


def add_sign_in(session: Session, user_id: int, *, via: str, now: datetime) -> int:
    """Store a sign-in event in the outbox; its event_id (the sign_in_id).

    A sign-in is an input like any gameplay event (the workers apply events with
    occurred_at set): it occurred when stored, is worth 1 and is stamped with the
    user's zone.
    """
    zone = select(User.timezone).where(User.user_id == user_id).scalar_subquery()
    return session.execute(
        insert(Event)
        .values(
            user_id=user_id,
            type=EventType.SIGN_IN,
            data={"via": via},
            created_at=now,
            occurred_at=now,
            tz=zone,
            value=1,
            attempts=0,
        )
        .returning(Event.event_id)
    ).scalar_one()


def add_refresh_token(
    session: Session,
    token_hash: str,
    *,
    user_id: int,
    family_id: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    session.execute(
        insert(RefreshToken).values(
            token_hash=token_hash,
            user_id=user_id,
            family_id=family_id,
            created_at=now,
            expires_at=expires_at,
        )
    )


# The whole refresh sign-in in one round trip (PostgreSQL): use the live token, mark
# the user signed in unless banned, insert the outbox event and the next token.
_ROTATE_AND_SIGN_IN = """
WITH used AS (
    UPDATE refresh_tokens SET used_at = %(now)s
    WHERE token_hash = %(old_hash)s AND used_at IS NULL AND revoked_at IS NULL
      AND expires_at > %(now)s
    RETURNING user_id, family_id
), signed_in AS (
    UPDATE users SET status = 'not_new', last_login_at = %(now)s
    FROM used
    WHERE users.user_id = used.user_id AND users.status <> 'banned'
    RETURNING users.user_id, users.role, users.timezone, used.family_id
), sign_in AS (
    INSERT INTO events (user_id, type, data, created_at, occurred_at, tz, value, attempts)
    SELECT user_id, 'sign_in', '{"via": "refresh"}', %(now)s, %(now)s, timezone, 1, 0
    FROM signed_in
    RETURNING event_id, user_id
), next_token AS (
    INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, expires_at)
    SELECT %(new_hash)s, user_id, family_id, %(now)s, %(expires_at)s FROM signed_in
)
SELECT sign_in.event_id, signed_in.user_id, signed_in.role
FROM sign_in JOIN signed_in USING (user_id)
"""


def rotate_and_sign_in(
    session: Session, *, old_hash: str, new_hash: str, now: datetime, expires_at: datetime
) -> tuple[int, int, str] | None:
    """(sign_in_id, user_id, role) when the token was live and its user not banned, else
    None with nothing changed but, for a banned user, the token marked used."""
    row = (
        session.connection()
        .exec_driver_sql(
            _ROTATE_AND_SIGN_IN,
            {"now": now, "old_hash": old_hash, "new_hash": new_hash, "expires_at": expires_at},
        )
        .one_or_none()
    )
    return None if row is None else (int(row[0]), int(row[1]), str(row[2]))


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
