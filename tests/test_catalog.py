"""The Quest Catalog service over real HTTP: reads through the Redis cache, admin
writes, validation, and that every write is visible at once."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from questline.infra import db
from questline.quests.rules import apply_sign_ins
from tests import factories as f

SEED_REWARD = {
    "reward_id": 1,
    "reward_name": "Ten Diamonds",
    "reward_item": "diamond",
    "reward_qty": 10,
    "items": [{"item": "diamond", "qty": 10}],
}
# The v2 fields of a quest that counts sign-ins with no period: v1's rule.
V1_RULE = {
    "trigger": {"event": "sign_in"},
    "measure": "count",
    "period": "none",
    "reset_at": "00:00",
    "week_starts_on": "monday",
    "timezone": "user",
    "max_per_period": None,
    "grace_periods": 0,
    "requires": [],
    "starts_at": None,
    "ends_at": None,
    "claim_within_seconds": None,
}
SEED_QUEST = {
    "quest_id": 1,
    "name": "sign-in-three-times",
    "description": "Sign in three times to earn ten diamonds; can be earned twice.",
    "auto_claim": False,
    "streak": 3,
    "duplication": 2,
    "active": True,
    "reward": SEED_REWARD,
    "target": 3,
    **V1_RULE,
}
NEW_QUEST = {
    "name": "daily-gold",
    "description": "Sign in twice, get gold",
    "auto_claim": True,
    "streak": 2,
    "duplication": 5,
    "reward_id": 1,
}


@pytest.fixture
def player() -> dict[str, str]:
    with db.transaction() as session:
        return f.bearer(f.add_user(session).user_id)


@pytest.fixture
def admin() -> dict[str, str]:
    with db.transaction() as session:
        return f.bearer(f.add_user(session, role="admin").user_id, role="admin")


def quests(client: httpx.Client, headers: dict[str, str]) -> list[dict[str, Any]]:
    r = client.get("/quests", headers=headers)
    assert r.status_code == 200, r.text
    body: list[dict[str, Any]] = r.json()
    return body


def test_the_seed_catalog_is_one_quest_and_one_reward(
    client: httpx.Client, player: dict[str, str]
) -> None:
    assert quests(client, player) == [SEED_QUEST]
    assert client.get("/quests/1", headers=player).json() == SEED_QUEST
    assert client.get("/rewards", headers=player).json() == [SEED_REWARD]
    assert client.get("/rewards/1", headers=player).json() == SEED_REWARD


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/quests/2", 404),
        ("/quests/9223372036854775807", 404),
        ("/rewards/2", 404),
        ("/quests/0", 422),
        ("/quests/9223372036854775808", 422),
        ("/quests/abc", 422),
        ("/rewards/-1", 422),
    ],
)
def test_unknown_or_impossible_ids(
    client: httpx.Client, player: dict[str, str], path: str, status: int
) -> None:
    r = client.get(path, headers=player)
    assert r.status_code == status, r.text
    assert r.json()["detail"]


def test_admin_creates_a_reward_and_a_quest_that_readers_see_at_once(
    client: httpx.Client, admin: dict[str, str], player: dict[str, str]
) -> None:
    assert quests(client, player) == [SEED_QUEST]  # fills the cache
    assert len(client.get("/rewards", headers=player).json()) == 1

    r = client.post(
        "/rewards",
        headers=admin,
        json={"reward_name": "Fifty Gold", "reward_item": "gold", "reward_qty": 50},
    )
    assert r.status_code == 201, r.text
    reward = r.json()
    assert reward == {
        "reward_id": reward["reward_id"],
        "reward_name": "Fifty Gold",
        "reward_item": "gold",
        "reward_qty": 50,
        "items": [{"item": "gold", "qty": 50}],
    }
    assert client.get("/rewards", headers=player).json() == [SEED_REWARD, reward]
    assert client.get(f"/rewards/{reward['reward_id']}", headers=player).json() == reward

    r = client.post("/quests", headers=admin, json={**NEW_QUEST, "reward_id": reward["reward_id"]})
    assert r.status_code == 201, r.text
    quest = r.json()
    expected = {
        **NEW_QUEST,
        "quest_id": quest["quest_id"],
        "active": True,
        "reward": reward,
        "target": 2,
        **V1_RULE,
    }
    del expected["reward_id"]
    assert quest == expected
    assert quests(client, player) == [SEED_QUEST, quest]
    assert client.get(f"/quests/{quest['quest_id']}", headers=player).json() == quest
    mine = client.get("/me/quests", headers=player).json()
    assert [q["quest_id"] for q in mine] == [1, quest["quest_id"]]


def test_a_quest_name_is_taken_once(client: httpx.Client, admin: dict[str, str]) -> None:
    assert client.post("/quests", headers=admin, json=NEW_QUEST).status_code == 201
    r = client.post("/quests", headers=admin, json={**NEW_QUEST, "streak": 9})
    assert r.status_code == 409, r.text
    assert "taken" in r.json()["detail"]
    r = client.post("/quests", headers=admin, json={**NEW_QUEST, "name": "sign-in-three-times"})
    assert r.status_code == 409


@pytest.mark.parametrize(
    "change",
    [
        {"reward_id": 999},
        {"reward_id": 0},
        {"reward_id": None},
        {"streak": 0},
        {"duplication": 0},
        {"streak": -1},
        {"streak": "three"},
        {"streak": 2.5},
        {"name": ""},
        {"name": "   "},
        {"name": "x" * 101},
        {"name": "nul\x00"},
        {"auto_claim": "maybe"},
        {"active": False, "extra": 1},
        {"unknown_field": 1},
    ],
)
def test_an_invalid_quest_is_refused_and_not_created(
    client: httpx.Client, admin: dict[str, str], change: dict[str, Any]
) -> None:
    r = client.post("/quests", headers=admin, json={**NEW_QUEST, **change})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert quests(client, admin) == [SEED_QUEST]


# v2: duplication may be left out (no limit), tests/test_catalog_v2.py.
@pytest.mark.parametrize("missing", ["name", "streak", "reward_id"])
def test_a_quest_needs_its_required_fields(
    client: httpx.Client, admin: dict[str, str], missing: str
) -> None:
    body = {k: v for k, v in NEW_QUEST.items() if k != missing}
    assert client.post("/quests", headers=admin, json=body).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        # v2: any item of 1-32 a-z 0-9 _ (so "ruby" is one); these are not.
        {"reward_name": "x", "reward_item": "Ruby", "reward_qty": 1},
        {"reward_name": "x", "reward_item": "", "reward_qty": 1},
        {"reward_name": "x", "reward_item": "gold", "reward_qty": 0},
        {"reward_name": "", "reward_item": "gold", "reward_qty": 1},
        {"reward_item": "gold", "reward_qty": 1},
        {"reward_name": "x", "reward_item": "gold", "reward_qty": 10**10},
        {"reward_name": "x", "reward_item": "gold", "reward_qty": 1, "reward_id": 7},
    ],
)
def test_an_invalid_reward_is_refused(
    client: httpx.Client, admin: dict[str, str], body: dict[str, Any]
) -> None:
    assert client.post("/rewards", headers=admin, json=body).status_code == 422
    assert client.get("/rewards", headers=admin).json() == [SEED_REWARD]


def test_a_patch_is_visible_at_once_through_the_cache(
    client: httpx.Client, admin: dict[str, str], player: dict[str, str]
) -> None:
    for path in ("/quests", "/quests/1", "/me/quests"):  # fill every cached read
        assert client.get(path, headers=player).status_code == 200

    r = client.patch(
        "/quests/1",
        headers=admin,
        json={"streak": 5, "name": "sign-in-five-times", "description": "five", "auto_claim": True},
    )
    assert r.status_code == 200, r.text
    changed = {
        **SEED_QUEST,
        "streak": 5,
        "target": 5,
        "name": "sign-in-five-times",
        "description": "five",
        "auto_claim": True,
    }
    assert r.json() == changed
    assert quests(client, player) == [changed]
    assert client.get("/quests/1", headers=player).json() == changed
    [mine] = client.get("/me/quests", headers=player).json()
    assert (mine["name"], mine["streak"], mine["auto_claim"]) == ("sign-in-five-times", 5, True)

    # Moving the quest to another reward shows the new reward everywhere.
    reward = client.post(
        "/rewards",
        headers=admin,
        json={"reward_name": "Gold", "reward_item": "gold", "reward_qty": 3},
    ).json()
    r = client.patch("/quests/1", headers=admin, json={"reward_id": reward["reward_id"]})
    assert r.json()["reward"] == reward
    [mine] = client.get("/me/quests", headers=player).json()
    assert mine["reward"] == {"reward_item": "gold", "reward_qty": 3}


def test_an_inactive_quest_is_hidden_from_players(
    client: httpx.Client, admin: dict[str, str], player: dict[str, str]
) -> None:
    other = client.post("/quests", headers=admin, json=NEW_QUEST).json()
    assert [q["quest_id"] for q in quests(client, player)] == [1, other["quest_id"]]

    r = client.patch("/quests/1", headers=admin, json={"active": False})
    assert r.status_code == 200
    assert r.json()["active"] is False
    assert [q["quest_id"] for q in quests(client, player)] == [other["quest_id"]]
    mine = client.get("/me/quests", headers=player).json()
    assert [q["quest_id"] for q in mine] == [other["quest_id"]]

    client.patch("/quests/1", headers=admin, json={"active": True})
    assert [q["quest_id"] for q in quests(client, player)] == [1, other["quest_id"]]


def test_duplication_cannot_go_below_a_player_s_completions(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    with db.transaction() as session:
        user = f.add_user(session)
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, user.user_id, 6))
    # The player has completed quest 1 twice.
    r = client.patch("/quests/1", headers=admin, json={"duplication": 1})
    assert r.status_code == 409, r.text
    assert "duplication" in r.json()["detail"]
    assert client.get("/quests/1", headers=admin).json()["duplication"] == 2
    assert client.patch("/quests/1", headers=admin, json={"duplication": 2}).status_code == 200
    r = client.patch("/quests/1", headers=admin, json={"duplication": 3})
    assert r.json()["duplication"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"streak": None},
        {"name": None},
        {"active": None},
        {"auto_claim": None},
        {"reward_id": None},
        {"streak": 0},
        {"reward_id": 999},
        {"active": "no"},
        {"auto_claim": 1},
        {"streak": "2"},
        {"quest_id": 5},
    ],
)
def test_an_invalid_patch_is_422_and_changes_nothing(
    client: httpx.Client, admin: dict[str, str], body: dict[str, Any]
) -> None:
    r = client.patch("/quests/1", headers=admin, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]
    assert client.get("/quests/1", headers=admin).json() == SEED_QUEST


def test_patch_conflicts_and_unknown_quests(client: httpx.Client, admin: dict[str, str]) -> None:
    other = client.post("/quests", headers=admin, json=NEW_QUEST).json()
    r = client.patch(
        f"/quests/{other['quest_id']}", headers=admin, json={"name": SEED_QUEST["name"]}
    )
    assert r.status_code == 409
    assert client.patch("/quests/999", headers=admin, json={"streak": 2}).status_code == 404
    # Renaming a quest to its own name is not a conflict; an empty patch changes nothing.
    r = client.patch("/quests/1", headers=admin, json={"name": SEED_QUEST["name"]})
    assert r.status_code == 200
    assert client.patch("/quests/1", headers=admin, json={}).json() == SEED_QUEST


def test_admin_routes_refuse_players_and_change_nothing(
    client: httpx.Client, player: dict[str, str]
) -> None:
    reward = {"reward_name": "x", "reward_item": "gold", "reward_qty": 1}
    for method, path, body in (
        ("POST", "/rewards", reward),
        ("POST", "/quests", NEW_QUEST),
        ("PATCH", "/quests/1", {"streak": 1}),
        ("POST", "/auth/users/1/ban", None),
    ):
        r = client.request(method, path, headers=player, json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["detail"] == "admin role required"
        r = client.request(method, path, json=body)
        assert r.status_code == 401, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    assert quests(client, player) == [SEED_QUEST]
    assert client.get("/rewards", headers=player).json() == [SEED_REWARD]
