"""Routes of the Quest Processing service. Every query is scoped to the token's user."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse

from api.deps import MAX_ID, CurrentUser, QuestIdPath, SessionDep, SignInIdPath, TokenUser
from api.processing.schemas import (
    ClaimOut,
    MyEvent,
    MyQuest,
    MyReward,
    SignInStatus,
    WalletOut,
)
from questline.quests import progress_view
from questline.quests import service as quests
from questline.wallet import service as wallet

router = APIRouter(tags=["processing"])

AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired token"},
    403: {"description": "banned user"},
}

# 1-255 printable ASCII characters.
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x20-\x7e]+$",
        description="Retries with the same key replay the first answer",
    ),
]


@router.get("/me/quests", response_model=list[MyQuest], responses=AUTH)
def my_quests(user: CurrentUser, session: SessionDep) -> Any:
    """Every active quest with this player's progress now, in their zone, ordered by
    quest_id."""
    return progress_view.my_quests(session, user_id=user.user_id, user_tz=user.timezone)


@router.post(
    "/me/quests/{quest_id}/claim",
    response_model=ClaimOut,
    responses={
        **AUTH,
        404: {"description": "unknown quest"},
        409: {"description": "nothing to claim"},
        422: {"description": "invalid Idempotency-Key, or one used for another quest"},
    },
)
def claim(
    quest_id: QuestIdPath,
    user: CurrentUser,
    session: SessionDep,
    idempotency_key: IdempotencyKey = None,
) -> Any:
    """Claim the oldest claimable reward of a quest and credit its bundle to the wallet."""
    if idempotency_key is None:
        result = quests.claim(session, user_id=user.user_id, quest_id=quest_id)
        session.commit()
        return result
    answer = quests.claim_once(
        session, user_id=user.user_id, quest_id=quest_id, key=idempotency_key
    )
    session.commit()
    return JSONResponse(status_code=answer.status_code, content=answer.body)


@router.get("/me/rewards", response_model=list[MyReward], responses=AUTH)
def my_rewards(user: TokenUser, session: SessionDep) -> Any:
    """Earned rewards, newest first."""
    return quests.my_rewards(session, user_id=user.user_id)


@router.get("/me/wallet", response_model=WalletOut, responses=AUTH)
def my_wallet(user: TokenUser, session: SessionDep) -> Any:
    """Every item this player holds; gold and diamond always."""
    return wallet.my_wallet(session, user_id=user.user_id)


@router.get("/me/events", response_model=list[MyEvent], responses=AUTH)
def my_events(
    user: TokenUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> Any:
    """This player's history, newest first; page with `before`."""
    return quests.my_events(session, user_id=user.user_id, limit=limit, before=before)


@router.get(
    "/sign-ins/{sign_in_id}",
    response_model=SignInStatus,
    responses={**AUTH, 404: {"description": "no such sign-in of this user"}},
)
def sign_in_status(sign_in_id: SignInIdPath, user: TokenUser, session: SessionDep) -> Any:
    """Whether a sign-in has been applied to quest progress yet."""
    return quests.sign_in_status(session, user_id=user.user_id, sign_in_id=sign_in_id)
