"""Routes of the User Authentication service."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, Request, Response
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
from questline.infra.after_commit import after_commit
from questline.infra.db import run_in_transaction
from questline.outbox import SignInStored
from questline.users import service as users


@asynccontextmanager
async def _signing_keys(_app: Any) -> AsyncIterator[None]:
    # This service signs tokens: it creates the default key pair on its first start,
    # and a missing or unreadable key stops the start, not the first login.
    security.prepare_signing_keys()
    yield


router = APIRouter(tags=["auth"], lifespan=_signing_keys)

AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired token"},
    403: {"description": "banned user"},
}
BUSY: dict[int | str, dict[str, Any]] = {
    503: {"description": "too many password checks at once; see Retry-After"},
}
# Answers that carry a password's outcome or tokens are never kept by a cache.
NO_STORE = "no-store"


@router.post(
    "/auth/signup",
    status_code=201,
    response_model=SignupOut,
    responses={
        409: {"description": "user name taken"},
        429: {"description": "too many sign-ups from this address; see Retry-After"},
        **BUSY,
    },
)
def signup(body: SignupIn, request: Request, response: Response, session: SessionDep) -> SignupOut:
    """Create a player account."""
    user = users.signup(
        session,
        user_name=body.user_name,
        password=body.password,
        client=client_address(request),
    )
    session.commit()
    response.headers["Cache-Control"] = NO_STORE
    return SignupOut.model_validate(users.profile(session, user))


def _sign_in(record: Callable[[Session], users.SignIn]) -> users.SignIn:
    """Record a sign-in in its own transaction, commit it, then wake a worker.

    Runs in one trip to the thread pool, and again from the start after a deadlock.
    The message goes out after the commit, so the answer never promises a sign-in
    that is not stored; if the message is lost, the outbox sweeper applies the
    sign-in anyway. A reused refresh token's family revocation is committed too.
    """

    def record_and_announce(session: Session) -> users.SignIn:
        sign_in = record(session)
        after_commit(session, SignInStored(sign_in.sign_in_id, sign_in.user_id))
        return sign_in

    return run_in_transaction(record_and_announce, keep=(RefreshTokenReused,))


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
        429: {
            "description": "too many failed attempts for that name or client, or too many "
            "sign-ins of that user; see Retry-After"
        },
        **BUSY,
    },
)
async def login(body: LoginIn, request: Request, response: Response) -> SignInOut:
    """Check a password; a successful login is one sign-in."""
    client = client_address(request)
    sign_in = await run_in_threadpool(
        _sign_in,
        lambda session: users.login(
            session, user_name=body.user_name, password=body.password, client=client
        ),
    )
    response.headers["Cache-Control"] = NO_STORE
    return _answer(sign_in)


@router.post(
    "/auth/refresh",
    response_model=SignInOut,
    responses={
        401: {"description": "unknown, expired or used token"},
        403: AUTH_ERRORS[403],
        429: {"description": "too many sign-ins of that user; see Retry-After"},
    },
)
async def refresh(body: RefreshIn, response: Response) -> SignInOut:
    """Trade a refresh token for new tokens; each refresh is one sign-in."""
    sign_in = await run_in_threadpool(
        _sign_in, lambda session: users.refresh(session, refresh_token=body.refresh_token)
    )
    response.headers["Cache-Control"] = NO_STORE
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
    responses={
        **AUTH_ERRORS,
        404: {"description": "unknown user"},
        409: {"description": "an admin cannot ban themselves"},
    },
)
def ban(user_id: UserIdPath, admin: AdminUser) -> UserOut:
    """Ban a user (admin): no more logins, and their tokens stop working."""
    shown = run_in_transaction(
        lambda session: users.profile(
            session, users.ban(session, user_id=user_id, by=admin.user_id)
        )
    )
    return UserOut.model_validate(shown)


@router.get("/.well-known/jwks.json")
def jwks() -> dict[str, Any]:
    """The public key that verifies access tokens."""
    return security.jwks()
