"""Routes of the Quest Catalog service."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter

from api.catalog.schemas import QuestIn, QuestOut, QuestPatch, RewardIn, RewardOut
from api.deps import AdminUser, QuestIdPath, RewardIdPath, SessionDep, TokenUser, read_only
from questline.catalog import service as catalog

router = APIRouter(tags=["catalog"])

AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, invalid or expired token"},
    403: {"description": "banned user, or not an admin on an admin route"},
}


# The JSON of the last quest list answered, beside the list it encodes: the list is the
# cache's own object for its catalog version (catalog.shared_quest_list), so a new
# version is a new object and is encoded once.
QUEST_LIST = TypeAdapter(list[QuestOut])
_encoded: tuple[list[dict[str, Any]], bytes] | None = None


def _quest_list_json(quests: list[dict[str, Any]]) -> bytes:
    global _encoded
    encoded = _encoded
    if encoded is None or encoded[0] is not quests:
        encoded = (quests, QUEST_LIST.dump_json(QUEST_LIST.validate_python(quests)))
        _encoded = encoded
    return encoded[1]


@router.get("/quests", response_model=list[QuestOut], responses=AUTH)
async def list_quests(_user: TokenUser) -> Response:
    """Active quests, ordered by quest_id.

    The most read route: async, and while this process may trust its copy of the
    catalog (questline.catalog.cache) it answers from memory, the JSON encoded once."""
    quests = catalog.peek_quest_list()
    if quests is None:
        quests = await run_in_threadpool(read_only, catalog.shared_quest_list)
    return Response(_quest_list_json(quests), media_type="application/json")


@router.get(
    "/quests/{quest_id}",
    response_model=QuestOut,
    responses={**AUTH, 404: {"description": "unknown"}},
)
def get_quest(quest_id: QuestIdPath, _user: TokenUser, session: SessionDep) -> Any:
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
def list_rewards(_user: TokenUser, session: SessionDep) -> Any:
    return catalog.list_rewards(session)


@router.get(
    "/rewards/{reward_id}",
    response_model=RewardOut,
    responses={**AUTH, 404: {"description": "unknown"}},
)
def get_reward(reward_id: RewardIdPath, _user: TokenUser, session: SessionDep) -> Any:
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
