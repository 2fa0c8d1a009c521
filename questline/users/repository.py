"""Queries on users, their refresh tokens and the sign-in events they record.

Lock order. Every transaction that locks both takes a user's refresh tokens first,
several of them in token_id order, and the user's row last:

- refresh (rotate_refresh_token, one statement on PostgreSQL): the presented token,
  then the user row;
- ban: all the user's live tokens in token_id order, then the user row;
- login (record_sign_in): the user row only (a new token is inserted, no existing one
  is locked);
- reuse of a spent token (revoke_family): the family's tokens in token_id order, and
  no user row.

The quest writers never lock a user row (rewards are credited to `wallets`, which come
after users in the lock order of questline.quests.repository), so no two of these can
wait on each other in a cycle. Locks on the user row are FOR NO KEY
UPDATE (what an UPDATE of its columns takes): they do not wait for the key-share
locks that inserting a user's events and tokens holds.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Row, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from models import Event, EventType, RefreshToken, User
from models.users import BanState, UserStatus
from questline.quests import live

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


class SignedIn(NamedTuple):
    """A stored sign-in: its outbox event (the sign_in_id), the user and their role."""

    sign_in_id: int
    user_id: int
    role: str


# The ban rule in SQL: sign-ins are recorded only for a user who is not banned.
_NOT_BANNED = User.status != UserStatus.BANNED


def mark_signed_in(session: Session, user_id: int, *, now: datetime) -> str | None:
    """Record a sign-in on the user row; the user's role, or None when (now) banned."""
    result = session.execute(
        update(User)
        .where(User.user_id == user_id, _NOT_BANNED)
        .values(status=UserStatus.NOT_NEW, last_login_at=now)
        .returning(User.role)
    )
    return result.scalar_one_or_none()


def record_sign_in(
    session: Session,
    user_id: int,
    *,
    via: str,
    family_id: str,
    token_hash: str,
    now: datetime,
    expires_at: datetime,
) -> SignedIn | None:
    """Mark the user signed in, store the sign-in event and the next refresh token (of
    `family_id`); None, with nothing written, when the user is banned."""
    role = mark_signed_in(session, user_id, now=now)
    if role is None:
        return None
    sign_in_id = add_sign_in(session, user_id, via=via, now=now)
    add_refresh_token(
        session, token_hash, user_id=user_id, family_id=family_id, now=now, expires_at=expires_at
    )
    return SignedIn(sign_in_id, user_id, role)


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
    live.announce(session, [user_id])  # it is a history item: wake the player's streams
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


def rotate_refresh_token(
    session: Session, token_hash: str, *, new_hash: str, now: datetime, expires_at: datetime
) -> SignedIn | None:
    """The refresh sign-in: use the live token, mark its user signed in, store the
    sign-in event and the next token of the same family. None when the token is
    unknown, spent or expired, or its user banned; then nothing is stored (a banned
    user's token may be marked used: the caller rolls back).

    On PostgreSQL in one statement (one round trip for the session start of every game
    client), elsewhere in four.
    """
    if session.get_bind().dialect.name == "postgresql":
        row = (
            session.connection()
            .exec_driver_sql(
                _ROTATE_AND_SIGN_IN,
                {
                    "now": now,
                    "old_hash": token_hash,
                    "new_hash": new_hash,
                    "expires_at": expires_at,
                    "not_new": UserStatus.NOT_NEW.value,
                    "banned": UserStatus.BANNED.value,
                },
            )
            .one_or_none()
        )
        if row is None:
            return None
        live.announce(session, [int(row[1])])  # the sign-in is a history item
        return SignedIn(int(row[0]), int(row[1]), str(row[2]))
    token = use_refresh_token(session, token_hash, now=now)
    if token is None:
        return None
    return record_sign_in(
        session,
        token.user_id,
        via="refresh",
        family_id=token.family_id,
        token_hash=new_hash,
        now=now,
        expires_at=expires_at,
    )


# rotate_refresh_token on PostgreSQL. The token row is locked first (`used`), the user
# row after it (`signed_in` reads `used`): the lock order of the module docstring.
_ROTATE_AND_SIGN_IN = """
WITH used AS (
    UPDATE refresh_tokens SET used_at = %(now)s
    WHERE token_hash = %(old_hash)s AND used_at IS NULL AND revoked_at IS NULL
      AND expires_at > %(now)s
    RETURNING user_id, family_id
), signed_in AS (
    UPDATE users SET status = %(not_new)s, last_login_at = %(now)s
    FROM used
    WHERE users.user_id = used.user_id AND users.status <> %(banned)s
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


def get_refresh_token(
    session: Session, token_hash: str, *, for_update: bool = False
) -> RefreshToken | None:
    stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def _revoke(session: Session, *where: Any, now: datetime) -> None:
    # Lock the live tokens in token_id order before updating them: two revocations of
    # overlapping sets (a ban, a reused token's family) then queue instead of deadlocking.
    live = (
        select(RefreshToken.token_id)
        .where(*where, RefreshToken.revoked_at.is_(None))
        .order_by(RefreshToken.token_id)
        .with_for_update()
    )
    session.execute(
        update(RefreshToken).where(RefreshToken.token_id.in_(live)).values(revoked_at=now)
    )


def revoke_family(session: Session, family_id: str, *, now: datetime) -> None:
    """Revoke every live token descended from one login."""
    _revoke(session, RefreshToken.family_id == family_id, now=now)


def revoke_all_for_user(session: Session, user_id: int, *, now: datetime) -> None:
    _revoke(session, RefreshToken.user_id == user_id, now=now)


def ban(session: Session, user_id: int, *, now: datetime) -> User | None:
    """Revoke the user's tokens, then mark the user banned (the lock order of the module
    docstring), then bump the ban version; the user, or None when there is no such user.

    The ban version row is taken last and only by bans: they commit in version order,
    so a reader that sees version N sees every ban up to N (questline.users.bans)."""
    revoke_all_for_user(session, user_id, now=now)
    user = session.scalars(
        update(User)
        .where(User.user_id == user_id)
        .values(status=UserStatus.BANNED)
        .returning(User)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if user is not None:
        bump = update(BanState).where(BanState.id == 1).values(version=BanState.version + 1)
        session.execute(bump)
    return user


def ban_version(session: Session) -> int:
    """The current ban version (see ban)."""
    return int(session.scalar(select(BanState.version).where(BanState.id == 1)) or 0)


def banned_user_ids(session: Session) -> set[int]:
    """Every banned user's id (bans are final: the set only grows)."""
    return set(session.scalars(select(User.user_id).where(User.status == UserStatus.BANNED)))


def delete_spent_refresh_tokens(session: Session, *, spent_before: datetime, limit: int) -> int:
    """Delete up to `limit` refresh tokens used, revoked or expired before `spent_before`
    (questline.retention); how many went."""
    spent = (
        select(RefreshToken.token_id)
        .where(
            or_(
                RefreshToken.used_at < spent_before,
                RefreshToken.revoked_at < spent_before,
                RefreshToken.expires_at < spent_before,
            )
        )
        .limit(limit)
    )
    result = session.execute(delete(RefreshToken).where(RefreshToken.token_id.in_(spent)))
    return int(getattr(result, "rowcount", 0) or 0)
