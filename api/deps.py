"""Request dependencies: the database session, the signed-in user, the admin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from models import User
from questline.errors import Forbidden, Unauthorized
from questline.infra.db import session_factory
from questline.users import service as users

bearer = HTTPBearer(auto_error=False, description="An access token from /auth/login")


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


def current_user(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token")
    return users.authenticate(session, credentials.credentials)


CurrentUser = Annotated[User, Depends(current_user)]


def admin_user(user: CurrentUser) -> User:
    if user.role != "admin":
        raise Forbidden("admin role required")
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# Ids are BIGINT: anything outside that range cannot exist and must not reach SQL.
MAX_ID = 2**63 - 1
QuestIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a quest_id")]
RewardIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a reward_id")]
UserIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a user_id")]
SignInIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="a sign_in_id")]
