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
    """Create a quest (admin). It applies to every sign-in stored after this returns."""
    quest = catalog.create_quest(session, **body.model_dump())
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
    """Change a quest (admin); reads and sign-ins see the change once this returns."""
    quest = catalog.update_quest(session, quest_id, **body.changes())
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


@router.post("/rewards", status_code=201, response_model=RewardOut, responses=AUTH)
def create_reward(body: RewardIn, _admin: AdminUser, session: SessionDep) -> Any:
    """Create a reward (admin)."""
    reward = catalog.create_reward(session, **body.model_dump())
    view = catalog.reward_view(reward)
    session.commit()
    return view
