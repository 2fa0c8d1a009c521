"""Routes of the Quest Catalog service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.catalog.schemas import QuestIn, QuestOut, QuestPatch, RewardIn, RewardOut
from api.deps import AdminUser, CurrentUser, QuestIdPath, RewardIdPath, SessionDep
from questline.catalog import service as catalog

router = APIRouter(tags=["catalog"])

AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired token"},
    403: {"description": "banned user, or not an admin on an admin route"},
}


@router.get("/quests", response_model=list[QuestOut], responses=AUTH)
def list_quests(_user: CurrentUser, session: SessionDep) -> Any:
    """Active quests, ordered by quest_id."""
    return catalog.list_quests(session)


@router.get(
    "/quests/{quest_id}",
    response_model=QuestOut,
    responses={**AUTH, 404: {"description": "unknown"}},
)
def get_quest(quest_id: QuestIdPath, _user: CurrentUser, session: SessionDep) -> Any:
    return catalog.get_quest(session, quest_id)


@router.post(
    "/quests",
    status_code=201,
    response_model=QuestOut,
    responses={**AUTH, 409: {"description": "name taken"}},
)
def create_quest(body: QuestIn, _admin: AdminUser, session: SessionDep) -> Any:
    """Create a quest (admin). It applies to every event stored after this returns.

    `target` (or v1's `streak`) is required; the other definition fields take the
    defaults of API.md "Quests, general form"."""
    quest = catalog.create_quest(session, **body.fields())
    view = catalog.quest_view(quest)
    session.commit()
    return view


@router.patch(
    "/quests/{quest_id}",
    response_model=QuestOut,
    responses={
        **AUTH,
        404: {"description": "unknown"},
        409: {"description": "name taken, or duplication below a user's completions"},
    },
)
def update_quest(
    quest_id: QuestIdPath, body: QuestPatch, _admin: AdminUser, session: SessionDep
) -> Any:
    """Change any of a quest's fields (admin); reads and events see the change once this
    returns."""
    quest = catalog.update_quest(session, quest_id, **body.fields())
    view = catalog.quest_view(quest)
    session.commit()
    return view


@router.get("/rewards", response_model=list[RewardOut], responses=AUTH)
def list_rewards(_user: CurrentUser, session: SessionDep) -> Any:
    return catalog.list_rewards(session)


@router.get(
    "/rewards/{reward_id}",
    response_model=RewardOut,
    responses={**AUTH, 404: {"description": "unknown"}},
)
def get_reward(reward_id: RewardIdPath, _user: CurrentUser, session: SessionDep) -> Any:
    return catalog.get_reward(session, reward_id)


@router.post(
    "/rewards",
    status_code=201,
    response_model=RewardOut,
    responses=AUTH,
)
def create_reward(body: RewardIn, _admin: AdminUser, session: SessionDep) -> Any:
    """Create a reward (admin): a bundle of 1-10 items, or v1's single item."""
    reward = catalog.create_reward(session, **body.fields())
    view = catalog.reward_view(reward)
    session.commit()
    return view
