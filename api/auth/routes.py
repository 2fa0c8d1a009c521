"""Routes of the User Authentication service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session

from api.auth.schemas import (
    LoginIn,
    RefreshIn,
    SignInOut,
    SignupIn,
    SignupOut,
    TimezoneIn,
    UserOut,
)
from api.deps import AdminUser, CurrentUser, SessionDep, UserIdPath, client_address
from questline import security
from questline.errors import RefreshTokenReused
from questline.infra.db import session_factory
from questline.users import service as users
from workers.publish import publish_sign_in

router = APIRouter(tags=["auth"])

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired token"},
    403: {"description": "banned user"},
}


@router.post(
    "/auth/signup",
    status_code=201,
    response_model=SignupOut,
    responses={409: {"description": "user name taken"}},
)
def signup(body: SignupIn, session: SessionDep) -> SignupOut:
    """Create a player account."""
    user = users.signup(session, user_name=body.user_name, password=body.password)
    session.commit()
    return SignupOut.model_validate(users.profile(session, user))


def _sign_in(record: Callable[[Session], users.SignIn]) -> users.SignIn:
    """Record a sign-in in its own transaction, commit it, then wake a worker.

    Runs in one trip to the thread pool. The message goes out after the commit, so
    the answer never promises a sign-in that is not stored; if the message is lost,
    the outbox sweeper applies the sign-in anyway.
    """
    with session_factory()() as session:
        try:
            sign_in = record(session)
        except RefreshTokenReused:
            session.commit()  # keep the family's revocation
            raise
        session.commit()
    publish_sign_in(sign_in.sign_in_id, sign_in.user_id)
    return sign_in


def _answer(sign_in: users.SignIn) -> SignInOut:
    return SignInOut(
        access_token=sign_in.access_token,
        expires_in=sign_in.expires_in,
        refresh_token=sign_in.refresh_token,
        user_id=sign_in.user_id,
        sign_in_id=sign_in.sign_in_id,
    )


@router.post(
    "/auth/login",
    response_model=SignInOut,
    responses={
        401: {"description": "wrong user name or password"},
        403: {"description": "banned user"},
        429: {"description": "too many failed attempts; see Retry-After"},
    },
)
async def login(body: LoginIn, request: Request) -> SignInOut:
    """Check a password; a successful login is one sign-in."""
    client = client_address(request)
    sign_in = await run_in_threadpool(
        _sign_in,
        lambda session: users.login(
            session, user_name=body.user_name, password=body.password, client=client
        ),
    )
    return _answer(sign_in)


@router.post(
    "/auth/refresh",
    response_model=SignInOut,
    responses={401: {"description": "unknown, expired or used token"}, 403: AUTH_ERRORS[403]},
)
async def refresh(body: RefreshIn) -> SignInOut:
    """Trade a refresh token for new tokens; each refresh is one sign-in."""
    sign_in = await run_in_threadpool(
        _sign_in, lambda session: users.refresh(session, refresh_token=body.refresh_token)
    )
    return _answer(sign_in)


@router.get("/auth/me", response_model=UserOut, responses=AUTH_ERRORS)
def me(user: CurrentUser, session: SessionDep) -> UserOut:
    """The token's user, with the wallet."""
    return UserOut.model_validate(users.profile(session, user))


@router.patch(
    "/auth/me",
    response_model=UserOut,
    responses={**AUTH_ERRORS, 422: {"description": "not an IANA time zone, or another field"}},
)
def update_me(body: TimezoneIn, user: CurrentUser, session: SessionDep) -> UserOut:
    """Set the player's time zone: events stored from now on are stamped with it."""
    updated = users.set_timezone(session, user_id=user.user_id, timezone=body.timezone)
    session.commit()
    return UserOut.model_validate(users.profile(session, updated))


@router.post(
    "/auth/users/{user_id}/ban",
    response_model=UserOut,
    responses={**AUTH_ERRORS, 404: {"description": "unknown user"}},
)
def ban(user_id: UserIdPath, _admin: AdminUser, session: SessionDep) -> UserOut:
    """Ban a user (admin): no more logins, and their tokens stop working."""
    user = users.ban(session, user_id=user_id)
    session.commit()
    return UserOut.model_validate(users.profile(session, user))


@router.get("/.well-known/jwks.json")
def jwks() -> dict[str, Any]:
    """The public key that verifies access tokens."""
    return security.jwks()
