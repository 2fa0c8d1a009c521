"""Request dependencies: the database session, the signed-in user, the admin."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from models import User
from models.users import Role
from questline import security
from questline.errors import Forbidden, Unauthorized
from questline.infra.db import session_factory
from questline.users import bans
from questline.users import service as users

T = TypeVar("T")

bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login")


@asynccontextmanager
async def _public_key(_app: Any) -> AsyncIterator[None]:
    security.require_verifying_key()
    yield


# Included by the services that only verify tokens (catalog, processing): no routes,
# but their start loads the public key, so a missing key stops the start with a
# message naming the file and `questline keys`. They never create a key.
verifying_service = APIRouter(lifespan=_public_key)


async def get_session() -> AsyncIterator[Session]:
    """One transaction per request. Writing routes commit explicitly before they
    answer (so the answer is durable); anything left is rolled back.

    Async so that opening the session (no I/O) and closing an already committed one
    cost no trip through the thread pool; a rollback that must reach the database
    still runs there.
    """
    session = session_factory()()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(_discard, session)
        else:
            session.close()


def _discard(session: Session) -> None:
    session.rollback()
    session.close()


SessionDep = Annotated[Session, Depends(get_session)]


def read_only(work: Callable[[Session], T]) -> T:
    """Run `work` in a session of its own that is never committed (for async routes
    that read the database only when their in-process copy will not do)."""
    session = session_factory()()
    try:
        return work(session)
    finally:
        session.close()


def current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    return users.authenticate(session, credentials.credentials)


CurrentUser = Annotated[User, Depends(current_user)]
"""The token's user read from the database in the request's session: a ban applies at
once. For the routes that write for the user or show the user row."""


async def token_user(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> security.TokenClaims:
    """The token's user without reading the user row per request: the ban list of this
    process, confirmed from the database at most bans.LEASE_SECONDS ago (a ban applies
    within the contract's 1 s), and each user looked up once per process (a token of a
    user who does not exist is 401). Async: then it costs no trip through the thread
    pool."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    claims = security.decode_access_token(credentials.credentials)
    ban_list = bans.ban_list
    if not (ban_list.fresh() and ban_list.knows(claims.user_id)):
        await run_in_threadpool(ban_list.confirm, claims.user_id)
    ban_list.refuse_if_banned(claims.user_id)
    return claims


TokenUser = Annotated[security.TokenClaims, Depends(token_user)]
"""The token's user_id and role, for the routes that only read."""


def admin_user(user: CurrentUser) -> User:
    if user.role != Role.ADMIN:
        raise Forbidden("admin role required")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


# The client of an address that is not an IP: one shared key, so that made-up
# X-Forwarded-For values cannot each start a fresh rate limit.
UNKNOWN_CLIENT = "unknown"


def client_address(request: Request) -> str:
    """The client that rate limits count against: its IP address, an IPv6 client as its
    /64 (what one host or household is given), and UNKNOWN_CLIENT for anything else.

    uvicorn takes the address from X-Forwarded-For when the peer is a trusted proxy
    (--forwarded-allow-ips, loopback by default; see README); it does not check that
    the value is an address, so this does.
    """
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return UNKNOWN_CLIENT
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


# Ids are BIGINT: anything outside that range cannot exist and must not reach SQL.
MAX_ID = 2**63 - 1
QuestIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a quest_id")]
RewardIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a reward_id")]
UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a user_id")]
SignInIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a sign_in_id")]
