"""Routes of the User Authentication service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request

from api.auth.schemas import LoginIn, RefreshIn, SignInOut, SignupIn, SignupOut, UserOut
from api.deps import AdminUser, CurrentUser, SessionDep, UserIdPath, client_address
from questline import security
from questline.errors import RefreshTokenReused
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
    return SignupOut.model_validate(user)


def _signed_in(sign_in: users.SignIn, background: BackgroundTasks) -> SignInOut:
    # The sign-in is committed; the message that wakes a worker goes out after the
    # answer. If it is lost, the outbox sweeper applies the sign-in anyway.
    background.add_task(publish_sign_in, sign_in.sign_in_id, sign_in.user_id)
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
def login(
    body: LoginIn, request: Request, session: SessionDep, background: BackgroundTasks
) -> SignInOut:
    """Check a password; a successful login is one sign-in."""
    sign_in = users.login(
        session,
        user_name=body.user_name,
        password=body.password,
        client=client_address(request),
    )
    session.commit()
    return _signed_in(sign_in, background)


@router.post(
    "/auth/refresh",
    response_model=SignInOut,
    responses={401: {"description": "unknown, expired or used token"}, 403: AUTH_ERRORS[403]},
)
def refresh(body: RefreshIn, session: SessionDep, background: BackgroundTasks) -> SignInOut:
    """Trade a refresh token for new tokens; each refresh is one sign-in."""
    try:
        sign_in = users.refresh(session, refresh_token=body.refresh_token)
    except RefreshTokenReused:
        session.commit()  # keep the family's revocation
        raise
    session.commit()
    return _signed_in(sign_in, background)


@router.get("/auth/me", response_model=UserOut, responses=AUTH_ERRORS)
def me(user: CurrentUser) -> UserOut:
    """The token's user, with the wallet."""
    return UserOut.model_validate(user)


@router.post(
    "/auth/users/{user_id}/ban",
    response_model=UserOut,
    responses={**AUTH_ERRORS, 404: {"description": "unknown user"}},
)
def ban(user_id: UserIdPath, _admin: AdminUser, session: SessionDep) -> UserOut:
    """Ban a user (admin): no more logins, and their tokens stop working."""
    user = users.ban(session, user_id=user_id)
    session.commit()
    return UserOut.model_validate(user)


@router.get("/.well-known/jwks.json")
def jwks() -> dict[str, Any]:
    """The public key that verifies access tokens."""
    return security.jwks()
