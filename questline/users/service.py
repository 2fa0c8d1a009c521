"""Sign-up, login, refresh and bans. Functions take the session first and never commit.

Login, refresh and ban run in questline.infra.db.run_in_transaction, which runs them
again after a deadlock: each is safe to repeat from the start.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, NoReturn
from zoneinfo import available_timezones

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import User
from models.base import utcnow
from models.users import Role, UserStatus
from questline import ratelimit, security
from questline.config import get_settings
from questline.errors import Banned, Conflict, Invalid, NotFound, RefreshTokenReused, Unauthorized
from questline.infra.after_commit import after_commit
from questline.quests import live
from questline.users import bans, repository
from questline.wallet import repository as wallet

BAD_CREDENTIALS = "invalid user name or password"


@dataclass(frozen=True)
class SignIn:
    """What a successful login or refresh returns; the sign-in event is in the session."""

    access_token: str
    expires_in: int
    refresh_token: str
    user_id: int
    sign_in_id: int


def ensure_not_banned(user: User | None) -> User:
    """The ban rule, for a user read from the database: Banned if banned (or gone)."""
    if user is None or user.status == UserStatus.BANNED:
        raise Banned()
    return user


def signup(
    session: Session,
    *,
    user_name: str,
    password: str,
    role: Role = Role.PLAYER,
    client: str | None = None,
) -> User:
    """Create a user; Conflict when the name is taken (in any letter case).

    A sign-up from a client address counts against that client's hourly limit
    (TooManySignups); operators' sign-ups (no client) do not.
    """
    if client is not None:
        ratelimit.count_signup(client)
    password_hash = security.hash_password(password)
    if repository.get_by_name(session, user_name) is not None:
        raise Conflict("user name already taken")
    user = User(user_name=user_name, password_hash=password_hash, role=role)
    session.add(user)
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise Conflict("user name already taken") from None
    return user


def login(session: Session, *, user_name: str, password: str, client: str) -> SignIn:
    """Verify a password and record a sign-in. Unknown name and wrong password look alike.

    The check is admitted by the failed-login limits before the password is hashed
    (TooManyAttempts once one is spent); a wrong password counts as a failure, and a
    right one counts a sign-in (TooManySignIns past that limit). Nothing else waits on
    the store: one call before the hash, one after.
    """
    with ratelimit.login_attempt(user_name, client) as attempt:
        user = repository.get_by_name(session, user_name)
        if not security.verify_password(password, user.password_hash if user else None):
            attempt.failed = True
            raise Unauthorized(BAD_CREDENTIALS)
        attempt.succeeded = True
        assert user is not None
        ensure_not_banned(user)
        # Counted as the attempt settles: one trip to the store after the hash.
        attempt.sign_in_of = user.user_id
    now = utcnow()
    raw_refresh = security.new_refresh_token()
    signed_in = repository.record_sign_in(
        session,
        user.user_id,
        via="login",
        family_id=secrets.token_hex(16),
        token_hash=security.hash_refresh_token(raw_refresh),
        now=now,
        expires_at=now + timedelta(seconds=get_settings().refresh_ttl_seconds),
    )
    if signed_in is None:
        raise Banned()  # banned since it was read
    return _answer(signed_in, raw_refresh)


def refresh(session: Session, *, refresh_token: str) -> SignIn:
    """Rotate a refresh token and record a sign-in.

    A token presented twice revokes its whole family and raises RefreshTokenReused;
    the caller must commit that revocation before answering.
    """
    now = utcnow()
    token_hash = security.hash_refresh_token(refresh_token)
    raw_refresh = security.new_refresh_token()
    signed_in = repository.rotate_refresh_token(
        session,
        token_hash,
        new_hash=security.hash_refresh_token(raw_refresh),
        now=now,
        expires_at=now + timedelta(seconds=get_settings().refresh_ttl_seconds),
    )
    if signed_in is None:
        _refuse_refresh(session, token_hash, now=now)
    # Counted once the user is known; refusing rolls the rotation back, so the
    # presented token stays usable.
    ratelimit.count_sign_in(signed_in.user_id)
    return _answer(signed_in, raw_refresh)


def _refuse_refresh(session: Session, token_hash: str, *, now: datetime) -> NoReturn:
    """Say why a token could not be rotated, in the order the contract wants."""
    token = repository.get_refresh_token(session, token_hash)
    if token is None:
        raise Unauthorized("unknown refresh token")
    # A ban revokes the user's tokens; their owner must still hear "banned" (403),
    # not "already used" (401), so the ban is checked first.
    ensure_not_banned(repository.get_by_id(session, token.user_id))
    if token.used_at is not None or token.revoked_at is not None:
        repository.revoke_family(session, token.family_id, now=now)
        raise RefreshTokenReused()
    if token.expires_at <= now:
        raise Unauthorized("refresh token expired")
    # Live now, but not when it was presented (a transaction that held it let go).
    raise Unauthorized("refresh token no longer valid; retry")


def _answer(signed_in: repository.SignedIn, raw_refresh: str) -> SignIn:
    access_token, expires_in = security.mint_access_token(signed_in.user_id, signed_in.role)
    return SignIn(
        access_token=access_token,
        expires_in=expires_in,
        refresh_token=raw_refresh,
        user_id=signed_in.user_id,
        sign_in_id=signed_in.sign_in_id,
    )


def ban(session: Session, *, user_id: int, by: int) -> User:
    """Ban a user (by the admin `by`): no more logins, refreshes or requests with
    existing tokens. Conflict for an admin banning themselves."""
    if user_id == by:
        raise Conflict("you cannot ban yourself")
    user = repository.ban(session, user_id, now=utcnow())
    if user is None:
        raise NotFound("user not found")
    live.announce(session, [user_id])  # its open streams close
    after_commit(session, bans.UserBanned(user_id))
    return user


def authenticate(session: Session, token: str) -> User:
    """The user behind an access token, read in `session`: Unauthorized if the token is
    bad, Banned if banned (at once: for the paths that write for the user)."""
    return authenticate_claims(session, token)[0]


def authenticate_claims(session: Session, token: str) -> tuple[User, security.TokenClaims]:
    """authenticate(), and the token's claims (a live stream ends when the token does)."""
    claims = security.decode_access_token(token)
    user = repository.get_by_id(session, claims.user_id)
    if user is None:
        raise Unauthorized("invalid token")
    return ensure_not_banned(user), claims


def profile(session: Session, user: User) -> dict[str, Any]:
    """A user as /auth/me and the ban answer show them: v1's gold and diamond read from
    the wallet, the zone, and every balance (`wallet`)."""
    balances = wallet.balances(session, user.user_id)
    return {
        "user_id": user.user_id,
        "user_name": user.user_name,
        "status": user.status,
        "gold": balances["gold"],
        "diamond": balances["diamond"],
        "created_at": user.created_at,
        "last_login_at": user.last_login_at,
        "timezone": user.timezone,
        "wallet": balances,
    }


def set_timezone(session: Session, *, user_id: int, timezone: str) -> User:
    """Change the zone stamped on the user's events from now on; Invalid (422) unless it
    is an IANA name."""
    if timezone not in _iana_zones():
        raise Invalid(f"timezone: {timezone[:64]!r} is not an IANA time zone (e.g. Europe/Paris)")
    user = repository.set_timezone(session, user_id, timezone)
    if user is None:
        raise NotFound("user not found")
    return user


@lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    # The names zoneinfo finds (the tzdata package ships them where the OS has none);
    # a set, so that no path-like name ever reaches the file system.
    return frozenset(available_timezones()) | {"UTC"}
