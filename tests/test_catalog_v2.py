"""The Quest Catalog's v2 side over real HTTP: reward bundles, quests of any shape, the
engine's validation (422 naming the field, nothing stored, catalog version unchanged),
the catalog version bumped by every write, and the auto-claim switch crediting bundles."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from models import Event, EventType, UserQuestProgress, UserReward
from models.wallet import LedgerEntry
from questline.catalog import repository
from questline.infra import db
from tests import factories as f


@pytest.fixture
def admin() -> dict[str, str]:
    with db.transaction() as session:
        return f.bearer(f.add_user(session, role="admin").user_id, role="admin")


def catalog_version() -> int:
    with db.transaction() as session:
        return repository.catalog_version(session)


def catalog(client: httpx.Client, headers: dict[str, str]) -> tuple[Any, Any]:
    """Everything a reader sees: quests (active), rewards."""
    quests = client.get("/quests", headers=headers)
    rewards = client.get("/rewards", headers=headers)
    assert quests.status_code == rewards.status_code == 200
    return quests.json(), rewards.json()


def new_reward(client: httpx.Client, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("reward_name", "Starter pack")
    body.setdefault("items", [{"item": "gold", "qty": 100}, {"item": "chest_epic", "qty": 1}])
    r = client.post("/rewards", headers=admin, json=body)
    assert r.status_code == 201, r.text
    reward: dict[str, Any] = r.json()
    return reward


def new_quest(client: httpx.Client, admin: dict[str, str], **body: Any) -> dict[str, Any]:
    body.setdefault("name", f"quest-{len(body)}-{datetime.now(UTC).timestamp()}")
    body.setdefault("reward_id", 1)
    body.setdefault("target", 1)
    r = client.post("/quests", headers=admin, json=body)
    assert r.status_code == 201, r.text
    quest: dict[str, Any] = r.json()
    return quest


def send(
    client: httpx.Client, method: str, path: str, headers: dict[str, str], body: Any
) -> httpx.Response:
    """A JSON body as ASCII text, so that it may carry what UTF-8 cannot (a lone
    surrogate, as JSON allows)."""
    return client.request(
        method,
        path,
        headers={**headers, "Content-Type": "application/json"},
        content=json.dumps(body),
    )


def instant(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


# --- rewards as bundles ---------------------------------------------------------


def test_a_bundle_reward_round_trips_and_repeats_its_first_item_for_v1(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    before = catalog_version()
    reward = new_reward(client, admin)
    assert reward == {
        "reward_id": reward["reward_id"],
        "reward_name": "Starter pack",
        "reward_item": "gold",
        "reward_qty": 100,
        "items": [{"item": "gold", "qty": 100}, {"item": "chest_epic", "qty": 1}],
    }
    assert catalog_version() == before + 1
    assert client.get(f"/rewards/{reward['reward_id']}", headers=admin).json() == reward
    assert reward in client.get("/rewards", headers=admin).json()

    # v1's form is one item; both forms together must agree.
    single = new_reward(client, admin, items=None, reward_item="coins", reward_qty=7)
    assert single["items"] == [{"item": "coins", "qty": 7}]
    both = new_reward(
        client, admin, items=[{"item": "gems", "qty": 2}], reward_item="gems", reward_qty=2
    )
    assert (both["reward_item"], both["reward_qty"]) == ("gems", 2)


TEN = [{"item": f"item_{n}", "qty": n + 1} for n in range(10)]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": []}, "items"),
        ({"items": [*TEN, {"item": "one_more", "qty": 1}]}, "items"),
        ({"items": "gold"}, "items"),
        ({"items": [{"item": "Gold", "qty": 1}]}, "items[0].item"),
        ({"items": [{"item": "x" * 33, "qty": 1}]}, "items[0].item"),
        ({"items": [{"item": "gold-bar", "qty": 1}]}, "items[0].item"),
        ({"items": [{"item": "gold", "qty": 0}]}, "items[0].qty"),
        ({"items": [{"item": "gold", "qty": "5"}]}, "items[0].qty"),
        ({"items": [{"item": "gold", "qty": 1.5}]}, "items[0].qty"),
        ({"items": [{"item": "gold", "qty": True}]}, "items[0].qty"),
        ({"items": [{"item": "gold", "qty": 10**10}]}, "items[0].qty"),
        ({"items": [{"item": "gold", "qty": 1}, {"item": "gems"}]}, "items[1].qty"),
        ({"items": [{"item": "gold", "qty": 1, "rarity": "x"}]}, "items[0] has no field 'rarity'"),
        ({"items": [7]}, "items[0]"),
        ({"items": None}, "items"),
        ({"items": None, "reward_item": "Gold", "reward_qty": 1}, "reward_item"),
        ({"items": None, "reward_item": "gold", "reward_qty": 0}, "reward_qty"),
        ({"items": None, "reward_item": "gold"}, "reward_qty"),
        ({"reward_item": "gems", "reward_qty": 100}, "reward_item"),
        ({"reward_name": "   "}, "reward_name"),
        ({"reward_name": "x" * 101}, "reward_name"),
        ({"reward_name": "nul\x00"}, "reward_name"),
        ({"reward_name": 5}, "reward_name"),
    ],
)
def test_a_bad_bundle_is_422_naming_the_field_and_stores_nothing(
    client: httpx.Client, admin: dict[str, str], body: dict[str, Any], field: str
) -> None:
    before, seen = catalog_version(), catalog(client, admin)
    full = {"reward_name": "Pack", "items": [{"item": "gold", "qty": 1}], **body}
    r = client.post("/rewards", headers=admin, json=full)
    assert r.status_code == 422, r.text
    assert field in str(r.json()["detail"]), r.text
    assert (catalog_version(), catalog(client, admin)) == (before, seen)


# --- quests of any shape ----------------------------------------------------------

EVERY_FIELD = {
    "name": "weekly-ranked-wins",
    "description": "Win ranked matches on big maps",
    "auto_claim": True,
    "target": 500,
    "duplication": None,
    "trigger": {
        "event": "match_won",
        "where": {
            "mode": "ranked",
            "score": {"gte": 10, "lte": 20.5},
            "map": {"in": ["dust", "mirage"]},
            "cheated": {"ne": True},
        },
    },
    "measure": "sum",
    "period": "week",
    "reset_at": "04:30",
    "week_starts_on": "sunday",
    "timezone": "Europe/London",
    "max_per_period": 2,
    "grace_periods": 0,
    "requires": [1],
    "starts_at": "2026-07-01T00:00:00+02:00",
    "ends_at": "2026-09-01T00:00:00Z",
    "claim_within_seconds": 3600,
}


def test_every_v2_field_round_trips(client: httpx.Client, admin: dict[str, str]) -> None:
    reward = new_reward(client, admin)
    before = catalog_version()
    quest = new_quest(client, admin, **EVERY_FIELD, reward_id=reward["reward_id"])
    assert catalog_version() == before + 1

    assert instant(quest.pop("starts_at")) == datetime(2026, 6, 30, 22, tzinfo=UTC)
    assert instant(quest.pop("ends_at")) == datetime(2026, 9, 1, tzinfo=UTC)
    expected = {
        k: v for k, v in EVERY_FIELD.items() if k not in ("starts_at", "ends_at")
    }
    assert quest == {
        **expected,
        "quest_id": quest["quest_id"],
        "streak": 500,
        "active": True,
        "reward": reward,
    }
    again = client.get(f"/quests/{quest['quest_id']}", headers=admin).json()
    assert {k: v for k, v in again.items() if k not in ("starts_at", "ends_at")} == quest
    assert [q["quest_id"] for q in client.get("/quests", headers=admin).json()] == [
        1,
        quest["quest_id"],
    ]

    # A streak quest: consecutive days with a grace day, limited, windowless.
    streak = new_quest(
        client,
        admin,
        name="login-streak",
        trigger={"event": "sign_in"},
        measure="consecutive",
        period="day",
        target=7,
        grace_periods=1,
        duplication=3,
        timezone="user",
    )
    assert {k: streak[k] for k in ("measure", "period", "target", "streak", "grace_periods")} == {
        "measure": "consecutive",
        "period": "day",
        "target": 7,
        "streak": 7,
        "grace_periods": 1,
    }
    assert (streak["max_per_period"], streak["duplication"]) == (1, 3)  # the day's default


def test_every_v2_field_can_be_patched(client: httpx.Client, admin: dict[str, str]) -> None:
    quest = new_quest(client, admin, name="to-change", target=3)
    other = new_quest(client, admin, name="first-step")
    changes: list[dict[str, Any]] = [
        {"trigger": {"event": "level_up", "where": {"level": {"gte": 5}}}},
        {"measure": "sum"},
        {"target": 9},
        {"streak": 4},
        {"period": "month"},
        {"reset_at": "23:59"},
        {"week_starts_on": "wednesday"},
        {"timezone": "Asia/Kathmandu"},
        {"max_per_period": 5},
        {"max_per_period": None},
        {"duplication": 10},
        {"duplication": None},
        {"requires": [other["quest_id"], 1]},
        {"requires": []},
        {"starts_at": "2027-01-01T00:00:00Z", "ends_at": "2027-02-01T00:00:00Z"},
        {"starts_at": None},
        {"claim_within_seconds": 86400},
        {"claim_within_seconds": None},
        {"measure": "consecutive", "period": "week", "grace_periods": 2},
        {"auto_claim": True},
    ]
    for change in changes:
        before = catalog_version()
        r = client.patch(f"/quests/{quest['quest_id']}", headers=admin, json=change)
        assert r.status_code == 200, (change, r.text)
        quest = r.json()
        for field, value in change.items():
            if field in ("starts_at", "ends_at"):
                assert instant(quest[field]) == instant(value), change
            elif field == "requires":
                assert quest[field] == sorted(value), change
            else:
                assert quest[field] == value, change
        assert quest["target"] == quest["streak"]
        assert client.get(f"/quests/{quest['quest_id']}", headers=admin).json() == quest
        assert catalog_version() == before + 1, change

    # A patch that changes nothing writes nothing.
    before = catalog_version()
    r = client.patch(f"/quests/{quest['quest_id']}", headers=admin, json={"target": 4})
    assert r.status_code == 200
    assert r.json() == quest
    assert catalog_version() == before


def test_target_or_streak_and_an_unlimited_duplication(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    by_target = new_quest(client, admin, name="by-target", target=5)
    assert (by_target["target"], by_target["streak"], by_target["duplication"]) == (5, 5, None)
    by_streak = new_quest(client, admin, name="by-streak", target=None, streak=4, duplication=None)
    assert (by_streak["target"], by_streak["streak"], by_streak["duplication"]) == (4, 4, None)
    both = new_quest(client, admin, name="both", target=6, streak=6, duplication=2)
    assert (both["target"], both["streak"], both["duplication"]) == (6, 6, 2)


def test_max_per_period_follows_the_period_s_default_unless_set(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    quest = new_quest(client, admin, name="daily", target=2)
    assert (quest["period"], quest["max_per_period"]) == ("none", None)
    path = f"/quests/{quest['quest_id']}"
    assert client.patch(path, headers=admin, json={"period": "day"}).json()["max_per_period"] == 1
    r = client.patch(path, headers=admin, json={"period": "week", "max_per_period": 3})
    assert r.json()["max_per_period"] == 3
    # 3 is the designer's, not a default: it stays when the period changes again.
    assert client.patch(path, headers=admin, json={"period": "month"}).json()["max_per_period"] == 3
    r = client.patch(path, headers=admin, json={"period": "none", "max_per_period": None})
    assert r.json()["max_per_period"] is None


# Each rule of the engine (and the service's text rules): the body change and the field
# the 422 names. Nothing may be stored and the catalog version must not move.
INVALID_QUESTS: list[tuple[dict[str, Any], str]] = [
    ({"measure": "consecutive"}, "period"),
    ({"measure": "consecutive", "period": "none"}, "period"),
    ({"reset_at": "25:00"}, "reset_at"),
    ({"reset_at": "4:00"}, "reset_at"),
    ({"reset_at": "12:60"}, "reset_at"),
    ({"reset_at": 400}, "reset_at"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"timezone": ""}, "timezone"),
    ({"timezone": 3}, "timezone"),
    ({"target": 5, "streak": 3}, "target"),
    ({"target": None}, "target"),
    ({"target": 0}, "target"),
    ({"target": 10**10}, "target"),
    ({"requires": [999]}, "requires"),
    ({"requires": "1"}, "requires"),
    ({"requires": [0]}, "requires"),
    ({"requires": list(range(1, 102))}, "requires"),
    ({"grace_periods": 1}, "grace_periods"),
    ({"grace_periods": -1, "measure": "consecutive", "period": "day"}, "grace_periods"),
    ({"starts_at": "2026-07-02T00:00:00Z", "ends_at": "2026-07-01T00:00:00Z"}, "ends_at"),
    ({"starts_at": "2026-07-01T00:00:00"}, "starts_at"),
    ({"ends_at": "tomorrow"}, "ends_at"),
    # In UTC these fall outside the calendar (years 0 and 10000).
    ({"starts_at": "0001-01-01T00:00:00+01:00"}, "starts_at"),
    ({"ends_at": "9999-12-31T23:59:59-23:59"}, "ends_at"),
    ({"claim_within_seconds": 0}, "claim_within_seconds"),
    ({"max_per_period": 0, "period": "day"}, "max_per_period"),
    ({"duplication": 0}, "duplication"),
    ({"measure": "avg"}, "measure"),
    ({"period": "year"}, "period"),
    ({"week_starts_on": "funday"}, "week_starts_on"),
    ({"trigger": "sign_in"}, "trigger"),
    ({"trigger": {"event": "Match Won"}}, "trigger.event"),
    ({"trigger": {"event": "quest_completed"}}, "trigger.event"),
    ({"trigger": {"event": "win", "when": {}}}, "trigger has no field 'when'"),
    ({"trigger": {"event": "win", "where": {"score": {"gte": "10"}}}}, "trigger.where.score.gte"),
    ({"trigger": {"event": "win", "where": {"score": {"around": 1}}}}, "trigger.where.score"),
    ({"trigger": {"event": "win", "where": {"map": {"in": []}}}}, "trigger.where.map.in"),
    ({"trigger": {"event": "win", "where": {"map": "a\x00b"}}}, "trigger.where.map"),
    # Strict types: nothing is coerced.
    ({"target": "3"}, "target"),
    ({"target": True}, "target"),
    ({"target": 2.0}, "target"),
    ({"duplication": "2"}, "duplication"),
    ({"auto_claim": "yes"}, "auto_claim"),
    ({"auto_claim": 1}, "auto_claim"),
    ({"max_per_period": "1", "period": "day"}, "max_per_period"),
    ({"grace_periods": 1.0, "measure": "consecutive", "period": "day"}, "grace_periods"),
    ({"description": 7}, "description"),
    ({"description": "nul\x00"}, "description"),
    ({"name": "\ud800"}, "name"),
]


@pytest.mark.parametrize(("change", "field"), INVALID_QUESTS)
def test_an_invalid_quest_is_422_naming_the_field_and_stores_nothing(
    client: httpx.Client, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    before, seen = catalog_version(), catalog(client, admin)
    body = {"name": "bad", "reward_id": 1, "target": 1, **change}
    r = send(client, "POST", "/quests", admin, body)
    assert r.status_code == 422, r.text
    assert field in str(r.json()["detail"]), r.text
    assert (catalog_version(), catalog(client, admin)) == (before, seen)


@pytest.mark.parametrize(("change", "field"), INVALID_QUESTS)
def test_an_invalid_patch_is_422_naming_the_field_and_changes_nothing(
    client: httpx.Client, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    before = catalog_version()
    stored = client.get("/quests/1", headers=admin).json()
    r = send(client, "PATCH", "/quests/1", admin, change)
    assert r.status_code == 422, r.text
    assert field in str(r.json()["detail"]), r.text
    assert client.get("/quests/1", headers=admin).json() == stored
    assert catalog_version() == before


def test_requires_may_not_form_a_cycle(client: httpx.Client, admin: dict[str, str]) -> None:
    a = new_quest(client, admin, name="step-a", requires=[1])
    b = new_quest(client, admin, name="step-b", requires=[a["quest_id"]])
    before = catalog_version()
    for quest_id, requires in (
        (1, [b["quest_id"]]),  # 1 -> b -> a -> 1
        (a["quest_id"], [b["quest_id"]]),
        (a["quest_id"], [a["quest_id"]]),
    ):
        r = client.patch(f"/quests/{quest_id}", headers=admin, json={"requires": requires})
        assert r.status_code == 422, r.text
        assert "requires forms a cycle" in r.json()["detail"], r.text
    assert catalog_version() == before
    assert client.get("/quests/1", headers=admin).json()["requires"] == []
    # A chain is fine, and so is requiring an inactive quest (it is known).
    client.patch(f"/quests/{a['quest_id']}", headers=admin, json={"active": False})
    chain = {"requires": [a["quest_id"], 1]}
    r = client.patch(f"/quests/{b['quest_id']}", headers=admin, json=chain)
    assert r.status_code == 200, r.text
    assert r.json()["requires"] == sorted([a["quest_id"], 1])


def test_a_taken_name_is_409_and_stores_nothing(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    new_quest(client, admin, name="unique")
    before = catalog_version()
    r = client.post("/quests", headers=admin, json={"name": "unique", "reward_id": 1, "target": 2})
    assert r.status_code == 409
    r = client.patch("/quests/1", headers=admin, json={"name": "unique", "target": 9})
    assert r.status_code == 409
    assert client.get("/quests/1", headers=admin).json()["target"] == 3
    assert catalog_version() == before


def test_duplication_cannot_go_below_a_player_s_completions(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    quest = new_quest(client, admin, name="capped", duplication=None)
    with db.transaction() as session:
        user = f.add_user(session)
        session.add(
            UserQuestProgress(user_id=user.user_id, quest_id=quest["quest_id"], completions=3)
        )
    path = f"/quests/{quest['quest_id']}"
    before = catalog_version()
    r = client.patch(path, headers=admin, json={"duplication": 2})
    assert r.status_code == 409, r.text
    assert "duplication" in r.json()["detail"]
    assert client.get(path, headers=admin).json()["duplication"] is None
    assert catalog_version() == before
    assert client.patch(path, headers=admin, json={"duplication": 3}).json()["duplication"] == 3
    r = client.patch(path, headers=admin, json={"duplication": None})
    assert r.json()["duplication"] is None


def test_switching_to_auto_claim_credits_waiting_bundles_once(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    reward = new_reward(client, admin)
    quest = new_quest(client, admin, name="by-hand", reward_id=reward["reward_id"])
    bundle = reward["items"]
    now = datetime.now(UTC)
    with db.transaction() as session:
        ann, bob = f.add_user(session), f.add_user(session)
        users = (ann.user_id, bob.user_id)
        rows = [
            # ann: two waiting, bob: one waiting and one expired, one already claimed.
            (ann.user_id, 1, "not_claimed", None, None),
            (ann.user_id, 2, "not_claimed", now + timedelta(hours=1), None),
            (bob.user_id, 1, "claimed", None, now),
            (bob.user_id, 2, "not_claimed", now - timedelta(seconds=1), None),
            (bob.user_id, 3, "not_claimed", None, None),
        ]
        for user_id, completion_no, status, expires_at, claimed_at in rows:
            session.add(
                UserReward(
                    user_id=user_id,
                    quest_id=quest["quest_id"],
                    completion_no=completion_no,
                    reward_item="gold",
                    reward_qty=100,
                    items=bundle,
                    status=status,
                    earned_at=now,
                    expires_at=expires_at,
                    claimed_at=claimed_at,
                )
            )

    path = f"/quests/{quest['quest_id']}"
    assert client.patch(path, headers=admin, json={"auto_claim": True}).status_code == 200
    # Off and on again: nothing is waiting any more, nothing is paid twice.
    assert client.patch(path, headers=admin, json={"auto_claim": False}).status_code == 200
    assert client.patch(path, headers=admin, json={"auto_claim": True}).status_code == 200

    with db.transaction() as session:
        wallets = {u: f.wallet_of(session, u) for u in users}
        statuses = {
            (r.user_id, r.completion_no): r.status
            for r in session.scalars(
                select(UserReward).where(UserReward.quest_id == quest["quest_id"])
            )
        }
        sources = sorted(
            (e.source, e.item) for e in session.scalars(select(LedgerEntry))
        )
        claimed = session.scalars(
            select(Event).where(
                Event.type == EventType.REWARD_CLAIMED, Event.quest_id == quest["quest_id"]
            )
        ).all()
        ids = {
            (r.user_id, r.completion_no): r.user_reward_id
            for r in session.scalars(select(UserReward))
        }
    assert wallets[ann.user_id] == {"gold": 200, "diamond": 0, "chest_epic": 2}
    assert wallets[bob.user_id] == {"gold": 100, "diamond": 0, "chest_epic": 1}
    assert statuses == {
        (ann.user_id, 1): "claimed",
        (ann.user_id, 2): "claimed",
        (bob.user_id, 1): "claimed",
        (bob.user_id, 2): "not_claimed",  # expired: never credited
        (bob.user_id, 3): "claimed",
    }
    paid = [ids[(ann.user_id, 1)], ids[(ann.user_id, 2)], ids[(bob.user_id, 3)]]
    assert sources == sorted(
        (f"user_reward:{rid}", line["item"]) for rid in paid for line in bundle
    )
    assert sorted(e.data["user_reward_id"] for e in claimed) == sorted(paid)
    assert all(e.data["items"] == bundle and e.data["auto_claim"] for e in claimed)
