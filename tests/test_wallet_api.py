"""The player's wallet over real HTTP: GET /me/wallet, claims that credit whole bundles
(balance shows every item), rewards that expire (shown as expired, never claimable),
and gameplay events in /me/events; end to end with a real worker."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import select

from models import Event, LedgerEntry, UserReward
from models.base import utcnow
from questline.credentials import service as credentials
from questline.infra import db
from tests import factories, support

BUNDLE = (("gold", 5), ("chest_epic", 1), ("diamond", 2))


def player() -> tuple[int, dict[str, str]]:
    with db.transaction() as session:
        user_id = factories.add_user(session).user_id
    return user_id, factories.bearer(user_id)


def bundle_quest(items: Sequence[tuple[str, int]] = BUNDLE, **columns: Any) -> int:
    with db.transaction() as session:
        quest = factories.add_v2_quest(
            session, target=1, trigger={"event": "chest_opened"}, items=items, **columns
        )
        return quest.quest_id


def earned(
    user_id: int,
    quest_id: int,
    *,
    n: int = 1,
    items: Sequence[tuple[str, int]] = BUNDLE,
    expires_in: timedelta | None = None,
) -> list[int]:
    """n rewards earned and waiting, as a worker would store them."""
    now = utcnow()
    with db.transaction() as session:
        done = len(factories.rewards(session, user_id, quest_id))
        rows = [
            UserReward(
                user_id=user_id,
                quest_id=quest_id,
                completion_no=done + i + 1,
                reward_item=items[0][0],
                reward_qty=items[0][1],
                items=[{"item": item, "qty": qty} for item, qty in items],
                earned_at=now,
                expires_at=None if expires_in is None else now + expires_in,
            )
            for i in range(n)
        ]
        session.add_all(rows)
        session.flush()
        return [r.user_reward_id for r in rows]


def claim(client: httpx.Client, headers: dict[str, str], quest_id: int, **kw: Any) -> Any:
    return client.post(f"/me/quests/{quest_id}/claim", headers=headers, **kw)


def test_the_wallet_shows_gold_and_diamond_always_and_every_item_held(
    client: httpx.Client,
) -> None:
    user_id, headers = player()
    r = client.get("/me/wallet", headers=headers)
    assert r.status_code == 200, r.text
    assert r.json() == {"balances": {"gold": 0, "diamond": 0}}
    with db.transaction() as session:
        factories.set_balance(session, user_id, "chest_epic", 3)
        factories.set_balance(session, user_id, "diamond", 7)
    assert client.get("/me/wallet", headers=headers).json() == {
        "balances": {"gold": 0, "diamond": 7, "chest_epic": 3}
    }
    assert client.get("/me/wallet").status_code == 401


def test_a_claim_credits_the_whole_bundle_once_and_answers_every_item(
    client: httpx.Client,
) -> None:
    user_id, headers = player()
    quest_id = bundle_quest()
    [reward_id] = earned(user_id, quest_id)
    with db.transaction() as session:
        factories.set_balance(session, user_id, "coins", 40)
    r = claim(client, headers, quest_id)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "quest_id": quest_id,
        "reward": {
            "reward_item": "gold",
            "reward_qty": 5,
            "items": [
                {"item": "gold", "qty": 5},
                {"item": "chest_epic", "qty": 1},
                {"item": "diamond", "qty": 2},
            ],
        },
        "balance": {"gold": 5, "diamond": 2, "chest_epic": 1, "coins": 40},
        "claimable": 0,
    }
    assert claim(client, headers, quest_id).status_code == 409
    with db.transaction() as session:
        ledger = session.scalars(select(LedgerEntry).where(LedgerEntry.user_id == user_id)).all()
        assert sorted((e.item, e.qty, e.source) for e in ledger) == [
            ("chest_epic", 1, f"user_reward:{reward_id}"),
            ("diamond", 2, f"user_reward:{reward_id}"),
            ("gold", 5, f"user_reward:{reward_id}"),
        ]
        [history] = factories.events(session, user_id, "reward_claimed")
        assert history.data == {
            "user_reward_id": reward_id,
            "completion_no": 1,
            "reward_item": "gold",
            "reward_qty": 5,
            "items": [
                {"item": "gold", "qty": 5},
                {"item": "chest_epic", "qty": 1},
                {"item": "diamond", "qty": 2},
            ],
        }
    [shown] = client.get("/me/rewards", headers=headers).json()
    assert shown["status"] == "claimed"
    assert shown["items"][1] == {"item": "chest_epic", "qty": 1}


def test_an_expired_reward_is_shown_expired_and_never_claimed(client: httpx.Client) -> None:
    user_id, headers = player()
    quest_id = bundle_quest(claim_within_seconds=60)
    [old] = earned(user_id, quest_id, expires_in=timedelta(seconds=-1))
    [fresh] = earned(user_id, quest_id, expires_in=timedelta(hours=1))
    shown = {r["user_reward_id"]: r for r in client.get("/me/rewards", headers=headers).json()}
    assert shown[old]["status"] == "expired"
    assert shown[fresh]["status"] == "not_claimed"
    assert datetime.fromisoformat(shown[old]["expires_at"]) < datetime.now(UTC)
    # The oldest claimable is the fresh one: the expired one is skipped.
    r = claim(client, headers, quest_id)
    assert r.status_code == 200, r.text
    assert r.json()["claimable"] == 0
    assert r.json()["balance"]["gold"] == 5
    assert claim(client, headers, quest_id).status_code == 409
    shown = {r["user_reward_id"]: r for r in client.get("/me/rewards", headers=headers).json()}
    assert (shown[old]["status"], shown[fresh]["status"]) == ("expired", "claimed")
    assert client.get("/me/wallet", headers=headers).json()["balances"]["gold"] == 5


def test_nothing_but_expired_rewards_is_409_and_credits_nothing(client: httpx.Client) -> None:
    user_id, headers = player()
    quest_id = bundle_quest(claim_within_seconds=60)
    earned(user_id, quest_id, n=2, expires_in=timedelta(seconds=-5))
    r = claim(client, headers, quest_id)
    assert r.status_code == 409, r.text
    r = claim(client, {**headers, "Idempotency-Key": "k1"}, quest_id)
    assert r.status_code == 409, r.text
    assert client.get("/me/wallet", headers=headers).json() == {
        "balances": {"gold": 0, "diamond": 0}
    }
    statuses = [x["status"] for x in client.get("/me/rewards", headers=headers).json()]
    assert statuses == ["expired", "expired"]


def test_a_replayed_claim_answers_the_first_balance(client: httpx.Client) -> None:
    user_id, headers = player()
    quest_id = bundle_quest()
    earned(user_id, quest_id, n=2)
    keyed = {**headers, "Idempotency-Key": "claim-1"}
    first = claim(client, keyed, quest_id)
    again = claim(client, keyed, quest_id)
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert first.json()["balance"] == {"gold": 5, "diamond": 2, "chest_epic": 1}
    assert first.json()["claimable"] == 1
    assert client.get("/me/wallet", headers=headers).json()["balances"]["chest_epic"] == 1


def test_parallel_claims_credit_each_bundle_once(client: httpx.Client) -> None:
    user_id, headers = player()
    quest_id = bundle_quest()
    earned(user_id, quest_id, n=3)

    def one(_: int) -> int:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            return int(claim(c, headers, quest_id).status_code)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = sorted(pool.map(one, range(10)))
    assert codes == [200] * 3 + [409] * 7
    assert client.get("/me/wallet", headers=headers).json() == {
        "balances": {"gold": 15, "diamond": 6, "chest_epic": 3}
    }


def test_my_events_include_gameplay_events_with_value_attrs_and_time(
    client: httpx.Client,
) -> None:
    user_id, headers = player()
    other_id, _ = player()
    with db.transaction() as session:
        key = credentials.create(session, name="server", scopes=["events:write"]).api_key
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    r = client.post(
        "/events",
        json={
            "events": [
                {
                    "user_id": user_id,
                    "type": "match_won",
                    "value": 2.5,
                    "attrs": {"mode": "ranked"},
                    "occurred_at": at.isoformat(),
                    "idempotency_key": "m1",
                },
                {"user_id": other_id, "type": "match_lost", "idempotency_key": "m1"},
            ]
        },
        headers={"X-API-Key": key},
    )
    assert r.status_code == 202, r.text
    mine = client.get("/me/events", headers=headers).json()
    assert len(mine) == 1
    [item] = mine
    assert item["event_id"] == r.json()["results"][0]["event_id"]
    assert (item["type"], item["quest_id"]) == ("match_won", None)
    assert item["data"]["value"] == 2.5
    assert item["data"]["attrs"] == {"mode": "ranked"}
    assert datetime.fromisoformat(item["data"]["occurred_at"]) == at


def test_gameplay_events_earn_a_bundle_that_is_claimed_end_to_end(
    client: httpx.Client, worker: support.Process
) -> None:
    user_id, headers = player()
    quest_id = bundle_quest()
    with db.transaction() as session:
        key = credentials.create(session, name="server", scopes=["events:write"]).api_key
    batch = [
        {"user_id": user_id, "type": "chest_opened", "idempotency_key": f"c{i}"} for i in range(2)
    ]
    r = client.post("/events", json={"events": batch}, headers={"X-API-Key": key})
    assert r.status_code == 202, r.text

    def earned_both() -> bool:
        with db.transaction() as session:
            return len(factories.rewards(session, user_id, quest_id)) == 2

    support.wait_until(earned_both, 30, "both rewards to be earned")
    for left in (1, 0):
        r = claim(client, headers, quest_id)
        assert r.status_code == 200, r.text
        assert r.json()["claimable"] == left
    assert client.get("/me/wallet", headers=headers).json() == {
        "balances": {"gold": 10, "diamond": 4, "chest_epic": 2}
    }
    types = [e["type"] for e in client.get("/me/events", headers=headers).json()]
    assert types.count("chest_opened") == 2
    assert types.count("reward_claimed") == 2
    with db.transaction() as session:
        applied = session.scalars(
            select(Event.processed_at).where(Event.user_id == user_id, Event.type == "chest_opened")
        ).all()
        assert all(at is not None for at in applied)
