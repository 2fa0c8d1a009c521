"""Sign-up, login, refresh and bans. Functions take the session first and never commit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models import User
from models.base import utcnow
from questline import ratelimit, security
from questline.config import get_settings
from questline.errors import Banned, Conflict, Invalid, NotFound, RefreshTokenReused, Unauthorized
from questline.users import repository
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


def signup(session: Session, *, user_name: str, password: str, role: str = "player") -> User:
    """Create a user; Conflict when the name is taken (in any letter case)."""
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
    """Verify a password and record a sign-in. Unknown name and wrong password look alike."""
    ratelimit.check_login_allowed(user_name, client)
    user = repository.get_by_name(session, user_name)
    if not security.verify_password(password, user.password_hash if user else None):
        ratelimit.record_login_failure(user_name, client)
        raise Unauthorized(BAD_CREDENTIALS)
    assert user is not None
    ratelimit.clear_login_failures(user_name)
    if user.status == "banned":
        raise Banned()
    return _record_sign_in(session, user.user_id, family_id=secrets.token_hex(16), via="login")


def refresh(session: Session, *, refresh_token: str) -> SignIn:
    """Rotate a refresh token and record a sign-in.

    A token presented twice revokes its whole family and raises RefreshTokenReused;
    the caller must commit that revocation before answering.
    """
    now = utcnow()
    token_hash = security.hash_refresh_token(refresh_token)
    # The frequent case: a live token of a player who is not banned.
    if session.get_bind().dialect.name == "postgresql":
        # One round trip for the session start of every game client.
        raw_refresh = security.new_refresh_token()
        rotated = repository.rotate_and_sign_in(
            session,
            old_hash=token_hash,
            new_hash=security.hash_refresh_token(raw_refresh),
            now=now,
            expires_at=now + timedelta(seconds=get_settings().refresh_ttl_seconds),
        )
        if rotated is not None:
            sign_in_id, user_id, role = rotated
            access_token, expires_in = security.mint_access_token(user_id, role)
            return SignIn(access_token, expires_in, raw_refresh, user_id, sign_in_id)
    else:
        live = repository.use_refresh_token(session, token_hash, now=now)
        if live is not None:
            return _record_sign_in(session, live.user_id, family_id=live.family_id, via="refresh")
    # Otherwise say why, in the order the contract wants (ban first).
    token = repository.get_refresh_token(session, token_hash, for_update=True)
    if token is None:
        raise Unauthorized("unknown refresh token")
    # A ban revokes the user's tokens; their owner must still hear "banned" (403),
    # not "already used" (401), so the ban is checked first.
    user = repository.get_by_id(session, token.user_id)
    if user is None or user.status == "banned":
        raise Banned()
    if token.used_at is not None or token.revoked_at is not None:
        repository.revoke_family(session, token.family_id, now=now)
        raise RefreshTokenReused()
    if token.expires_at <= now:
        raise Unauthorized("refresh token expired")
    token.used_at = now
    return _record_sign_in(session, user.user_id, family_id=token.family_id, via="refresh")


def _record_sign_in(session: Session, user_id: int, *, family_id: str, via: str) -> SignIn:
    # One transaction: user row, outbox event and the next refresh token, in three
    # statements (every login, and refreshes where rotate_and_sign_in is unavailable).
    now = utcnow()
    role = repository.mark_signed_in(session, user_id, now=now)
    if role is None:
        raise Banned()
    sign_in_id = repository.add_sign_in(session, user_id, via=via, now=now)
    raw_refresh = security.new_refresh_token()
    repository.add_refresh_token(
        session,
        security.hash_refresh_token(raw_refresh),
        user_id=user_id,
        family_id=family_id,
        now=now,
        expires_at=now + timedelta(seconds=get_settings().refresh_ttl_seconds),
    )
    access_token, expires_in = security.mint_access_token(user_id, role)
    return SignIn(
        access_token=access_token,
        expires_in=expires_in,
        refresh_token=raw_refresh,
        user_id=user_id,
        sign_in_id=sign_in_id,
    )


def ban(session: Session, *, user_id: int) -> User:
    """Ban a user: no more logins, refreshes or requests with existing tokens."""
    user = repository.get_by_id(session, user_id, for_update=True)
    if user is None:
        raise NotFound("user not found")
    user.status = "banned"
    repository.revoke_all_for_user(session, user_id, now=utcnow())
    session.flush()
    return user


def authenticate(session: Session, token: str) -> User:
    """The user behind an access token: Unauthorized if the token is bad, Banned if banned."""
    claims = security.decode_access_token(token)
    user = repository.get_by_id(session, claims.user_id)
    if user is None:
        raise Unauthorized("invalid token")
    if user.status == "banned":
        raise Banned()
    return user


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
