"""The Quest Processing service over real HTTP: /me/quests, claims with and without
Idempotency-Key, earned rewards, history, sign-in status; and what every service
serves besides its routes (health, readiness, metrics, OpenAPI)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from questline import outbox
from questline.catalog import cache
from questline.infra import db
from questline.quests.rules import apply_inputs
from tests import factories as f
from tests import support

MY_QUEST_FIELDS = {
    "quest_id",
    "name",
    "streak",
    "duplication",
    "auto_claim",
    "reward",
    "curr_streak",
    "completions",
    "claimed",
    "claimable",
    "status",
}
MY_REWARD_FIELDS = {
    "user_reward_id",
    "quest_id",
    "reward_item",
    "reward_qty",
    "items",
    "status",
    "earned_at",
    "expires_at",
    "claimed_at",
}


def player_with_sign_ins(n: int = 0) -> tuple[int, dict[str, str]]:
    """A committed player whose n sign-ins are already applied, and their headers."""
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        if n:
            apply_inputs(session, event_ids=f.add_sign_ins(session, user_id, n))
    return user_id, f.bearer(user_id)


def sign_in(user_id: int, n: int) -> None:
    with db.transaction() as session:
        apply_inputs(session, event_ids=f.add_sign_ins(session, user_id, n))


def auto_quest(streak: int = 1, duplication: int = 3) -> int:
    with db.transaction() as session:
        quest = f.add_quest(
            session, streak=streak, duplication=duplication, auto_claim=True, item="gold", qty=4
        )
    cache.invalidate()
    return quest.quest_id


def my_quest(client: httpx.Client, headers: dict[str, str], quest_id: int = 1) -> dict[str, Any]:
    r = client.get("/me/quests", headers=headers)
    assert r.status_code == 200, r.text
    return next(q for q in r.json() if q["quest_id"] == quest_id)


def claim(
    client: httpx.Client, headers: dict[str, str], quest_id: int = 1, key: str | None = None
) -> httpx.Response:
    extra = {} if key is None else {"Idempotency-Key": key}
    return client.post(f"/me/quests/{quest_id}/claim", headers={**headers, **extra})


# --- /me/quests ---------------------------------------------------------------


def test_my_quests_lists_every_active_quest_with_my_progress(client: httpx.Client) -> None:
    gold = auto_quest(streak=2, duplication=3)
    _user_id, headers = player_with_sign_ins(0)
    r = client.get("/me/quests", headers=headers)
    assert r.status_code == 200
    # v1's fields, with their v1 values (v2's fields: tests/test_my_quests_v2.py).
    assert [set(q) & MY_QUEST_FIELDS for q in r.json()] == [MY_QUEST_FIELDS, MY_QUEST_FIELDS]
    first, second = ({k: v for k, v in q.items() if k in MY_QUEST_FIELDS} for q in r.json())
    assert first == {
        "quest_id": 1,
        "name": "sign-in-three-times",
        "streak": 3,
        "duplication": 2,
        "auto_claim": False,
        "reward": {"reward_item": "diamond", "reward_qty": 10},
        "curr_streak": 0,
        "completions": 0,
        "claimed": 0,
        "claimable": 0,
        "status": "not_started",
    }
    assert (second["quest_id"], second["auto_claim"], second["status"]) == (
        gold,
        True,
        "not_started",
    )


def test_quest_status_follows_progress_and_claims(client: httpx.Client) -> None:
    gold = auto_quest(streak=2, duplication=1)
    user_id, headers = player_with_sign_ins(1)
    seen = [(my_quest(client, headers)["status"], my_quest(client, headers, gold)["status"])]

    sign_in(user_id, 2)  # 3 sign-ins: quest 1 completed once; gold done (auto-claimed)
    quest = my_quest(client, headers)
    assert (quest["curr_streak"], quest["completions"], quest["claimed"], quest["claimable"]) == (
        0,
        1,
        0,
        1,
    )
    auto = my_quest(client, headers, gold)
    assert (auto["completions"], auto["claimed"], auto["claimable"]) == (1, 1, 0)
    seen.append((quest["status"], auto["status"]))

    assert claim(client, headers).status_code == 200
    seen.append((my_quest(client, headers)["status"], my_quest(client, headers, gold)["status"]))

    sign_in(user_id, 3)
    assert claim(client, headers).status_code == 200
    quest = my_quest(client, headers)
    assert (quest["completions"], quest["claimed"], quest["claimable"]) == (2, 2, 0)
    seen.append((quest["status"], my_quest(client, headers, gold)["status"]))

    assert seen == [
        ("in_progress", "in_progress"),
        ("claimable", "completed"),
        ("in_progress", "completed"),
        ("completed", "completed"),
    ]


# --- claims -------------------------------------------------------------------


def test_claim_credits_the_oldest_reward(client: httpx.Client) -> None:
    _user_id, headers = player_with_sign_ins(6)
    r = claim(client, headers)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "quest_id": 1,
        "reward": {
            "reward_item": "diamond",
            "reward_qty": 10,
            "items": [{"item": "diamond", "qty": 10}],
        },
        "balance": {"gold": 0, "diamond": 10},
        "claimable": 1,
    }
    rewards = client.get("/me/rewards", headers=headers).json()
    assert [r["status"] for r in rewards] == ["not_claimed", "claimed"]  # newest first
    r = claim(client, headers)
    assert r.json()["balance"] == {"gold": 0, "diamond": 20}
    assert r.json()["claimable"] == 0
    assert client.get("/auth/me", headers=headers).json()["diamond"] == 20
    r = claim(client, headers)
    assert r.status_code == 409
    assert r.json() == {"detail": "nothing to claim"}
    assert client.get("/auth/me", headers=headers).json()["diamond"] == 20
    claimed = [
        e for e in client.get("/me/events", headers=headers).json() if e["type"] == "reward_claimed"
    ]
    assert [e["data"]["completion_no"] for e in claimed] == [2, 1]


@pytest.mark.parametrize(
    ("path", "status"), [("/me/quests/999/claim", 404), ("/me/quests/0/claim", 422)]
)
def test_claiming_an_unknown_quest(client: httpx.Client, path: str, status: int) -> None:
    _user_id, headers = player_with_sign_ins(3)
    r = client.post(path, headers=headers)
    assert r.status_code == status
    assert client.get("/auth/me", headers=headers).json()["diamond"] == 0


def test_an_idempotency_key_replays_the_first_answer(client: httpx.Client) -> None:
    _user_id, headers = player_with_sign_ins(6)
    first = claim(client, headers, key="claim-1")
    assert first.status_code == 200
    for _ in range(3):
        again = claim(client, headers, key="claim-1")
        assert (again.status_code, again.json()) == (200, first.json())
    assert client.get("/auth/me", headers=headers).json()["diamond"] == 10
    assert my_quest(client, headers)["claimable"] == 1

    second = claim(client, headers, key="claim-2")
    assert second.json()["balance"]["diamond"] == 20


def test_a_replayed_409_stays_409_after_a_reward_is_earned(client: httpx.Client) -> None:
    user_id, headers = player_with_sign_ins(0)
    early = claim(client, headers, key="too-early")
    assert (early.status_code, early.json()) == (409, {"detail": "nothing to claim"})
    sign_in(user_id, 3)
    again = claim(client, headers, key="too-early")
    assert (again.status_code, again.json()) == (409, early.json())
    assert client.get("/auth/me", headers=headers).json()["diamond"] == 0
    assert claim(client, headers, key="in-time").status_code == 200


def test_an_idempotency_key_for_another_quest_is_422(client: httpx.Client) -> None:
    gold = auto_quest()
    _user_id, headers = player_with_sign_ins(3)
    assert claim(client, headers, key="k").status_code == 200
    r = claim(client, headers, quest_id=gold, key="k")
    assert r.status_code == 422
    assert "Idempotency-Key" in r.json()["detail"]
    # Keys belong to one player: another may use the same one.
    _other, other_headers = player_with_sign_ins(3)
    assert claim(client, other_headers, key="k").status_code == 200


@pytest.mark.parametrize("key", ["", "k" * 256, b"\xc3\xa9t\xc3\xa9", "tab\there"])
def test_a_malformed_idempotency_key_is_422_and_claims_nothing(
    client: httpx.Client, key: str | bytes
) -> None:
    _user_id, headers = player_with_sign_ins(3)
    r = client.post("/me/quests/1/claim", headers={**headers, "Idempotency-Key": key})
    assert r.status_code == 422, r.text
    assert my_quest(client, headers)["claimable"] == 1
    assert claim(client, headers, key="k" * 255).status_code == 200


# --- rewards, history, sign-ins -------------------------------------------------


def test_my_rewards_lists_earned_rewards_newest_first(client: httpx.Client) -> None:
    gold = auto_quest(streak=2, duplication=2)
    user_id, headers = player_with_sign_ins(3)
    sign_in(user_id, 1)
    assert claim(client, headers).status_code == 200
    r = client.get("/me/rewards", headers=headers)
    assert r.status_code == 200
    rewards = r.json()
    assert all(set(x) == MY_REWARD_FIELDS for x in rewards)
    ids = [x["user_reward_id"] for x in rewards]
    assert ids == sorted(ids, reverse=True)
    summary = [(x["quest_id"], x["reward_item"], x["reward_qty"], x["status"]) for x in rewards]
    assert summary == [
        (gold, "gold", 4, "claimed"),  # 4th sign-in
        (1, "diamond", 10, "claimed"),  # 3rd sign-in, claimed by hand
        (gold, "gold", 4, "claimed"),  # 2nd sign-in
    ]
    for x in rewards:
        earned = datetime.fromisoformat(x["earned_at"])
        assert earned.utcoffset() is not None
        assert datetime.fromisoformat(x["claimed_at"]) >= earned
    _other, other_headers = player_with_sign_ins(0)
    assert client.get("/me/rewards", headers=other_headers).json() == []


def test_my_events_page_backwards_through_my_history(client: httpx.Client) -> None:
    _user_id, headers = player_with_sign_ins(3)
    player_with_sign_ins(3)  # someone else's history must not show
    assert claim(client, headers).status_code == 200
    everything = client.get("/me/events", headers=headers, params={"limit": 500}).json()
    types = [e["type"] for e in reversed(everything)]
    assert types == [
        "sign_in",
        "sign_in",
        "sign_in",
        "quest_progress",
        "quest_progress",
        "quest_progress",
        "quest_completed",
        "reward_earned",
        "reward_claimed",
    ]
    assert all(set(e) == {"event_id", "type", "quest_id", "data", "created_at"} for e in everything)
    assert {e["quest_id"] for e in everything if e["type"] != "sign_in"} == {1}
    assert {e["quest_id"] for e in everything if e["type"] == "sign_in"} == {None}

    pages: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 4}
    while page := client.get("/me/events", headers=headers, params=params).json():
        assert len(page) <= 4
        pages += page
        params["before"] = page[-1]["event_id"]
    assert pages == everything
    default = client.get("/me/events", headers=headers).json()
    assert default == everything  # fewer than the default limit of 50


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 501},
        {"limit": -1},
        {"limit": "ten"},
        {"before": 0},
        {"before": -5},
        {"before": 2**63},
        {"before": "x"},
    ],
)
def test_out_of_range_history_paging_is_422(client: httpx.Client, params: dict[str, Any]) -> None:
    _user_id, headers = player_with_sign_ins(1)
    r = client.get("/me/events", headers=headers, params=params)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


def test_history_paging_bounds_are_accepted(client: httpx.Client) -> None:
    _user_id, headers = player_with_sign_ins(3)
    assert len(client.get("/me/events", headers=headers, params={"limit": 1}).json()) == 1
    r = client.get("/me/events", headers=headers, params={"limit": 500, "before": 1})
    assert (r.status_code, r.json()) == (200, [])


@pytest.mark.usefixtures("no_worker")  # no sweeper: the sign-in stays pending until applied
def test_a_sign_in_is_pending_then_processed(client: httpx.Client) -> None:
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        [sign_in_id] = f.add_sign_ins(session, user_id)
    headers = f.bearer(user_id)
    r = client.get(f"/sign-ins/{sign_in_id}", headers=headers)
    assert r.status_code == 200
    pending = r.json()
    assert set(pending) == {"sign_in_id", "status", "created_at", "processed_at"}
    assert (pending["sign_in_id"], pending["status"], pending["processed_at"]) == (
        sign_in_id,
        "pending",
        None,
    )

    outbox.process_sign_in(sign_in_id)
    done = client.get(f"/sign-ins/{sign_in_id}", headers=headers).json()
    assert done["status"] == "processed"
    assert done["created_at"] == pending["created_at"]
    assert datetime.fromisoformat(done["processed_at"]) >= datetime.fromisoformat(
        done["created_at"]
    )


def test_another_player_s_sign_in_is_404(client: httpx.Client) -> None:
    _owner_id, owner = player_with_sign_ins(3)
    _intruder_id, intruder = player_with_sign_ins(0)
    events = client.get("/me/events", headers=owner).json()
    sign_in_id = next(e["event_id"] for e in events if e["type"] == "sign_in")
    other_event = next(e["event_id"] for e in events if e["type"] != "sign_in")
    assert client.get(f"/sign-ins/{sign_in_id}", headers=owner).status_code == 200

    r = client.get(f"/sign-ins/{sign_in_id}", headers=intruder)
    assert r.status_code == 404
    unknown = client.get("/sign-ins/999999", headers=intruder)
    assert (unknown.status_code, unknown.json()) == (404, r.json())  # nothing leaks
    assert client.get(f"/sign-ins/{other_event}", headers=owner).status_code == 404
    assert client.get("/sign-ins/0", headers=owner).status_code == 422


# --- health, readiness, metrics, OpenAPI ----------------------------------------


def test_health_and_readiness(client: httpx.Client) -> None:
    r = client.get("/healthz")
    assert (r.status_code, r.json()) == (200, {"status": "ok"})
    r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ok"
    assert r.json()["checks"] == {"database": "ok", "schema": "ok", "broker": "ok"}


def counter(text: str, route: str, status: str) -> float:
    pattern = (
        r'^questline_http_requests_total\{[^}]*method="GET"[^}]*'
        rf'route="{re.escape(route)}"[^}}]*status="{status}"[^}}]*\}} ([0-9.e+]+)$'
    )
    found = re.findall(pattern, text, re.MULTILINE)
    return sum(float(v) for v in found)


def test_metrics_count_requests_by_route_template(client: httpx.Client) -> None:
    _user_id, headers = player_with_sign_ins(0)
    before = client.get("/metrics").text
    for _ in range(3):
        client.get("/sign-ins/12345", headers=headers)
    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert "# TYPE questline_http_requests_total counter" in r.text
    assert "questline_http_request_duration_seconds_bucket" in r.text
    assert "questline_outbox_pending" in r.text
    assert (
        counter(r.text, "/sign-ins/{sign_in_id}", "404")
        - counter(before, "/sign-ins/{sign_in_id}", "404")
        == 3
    )
    assert "/sign-ins/12345" not in r.text  # raw paths would explode the label set


SERVICES = {
    "api.auth.main:app": {
        "/auth/signup",
        "/auth/login",
        "/auth/refresh",
        "/auth/me",
        "/auth/users/{user_id}/ban",
        "/auth/api-keys",
        "/auth/api-keys/{key_id}",
        "/.well-known/jwks.json",
    },
    "api.catalog.main:app": {
        "/quests",
        "/quests/{quest_id}",
        "/rewards",
        "/rewards/{reward_id}",
    },
    "api.processing.main:app": {
        "/me/quests",
        "/me/quests/{quest_id}/claim",
        "/me/rewards",
        "/me/events",
        "/me/wallet",
        "/me/stream",
        "/sign-ins/{sign_in_id}",
        "/events",
        "/events/{event_id}",
        "/webhooks",
        "/webhooks/{webhook_id}",
        "/webhooks/{webhook_id}/deliveries",
        "/webhooks/{webhook_id}/deliveries/{delivery_id}/retry",
    },
}
OPERATIONS = {"/healthz", "/readyz", "/metrics"}
# One path of each service, called without a token: 401 where served, 404 elsewhere.
PROBES = {
    "api.auth.main:app": "/auth/me",
    "api.catalog.main:app": "/quests",
    "api.processing.main:app": "/me/quests",
}


@pytest.fixture(scope="module")
def services(database: str) -> Iterator[dict[str, str]]:
    """Each service app alone, over real HTTP."""
    import importlib

    urls: dict[str, str] = {}
    servers = []
    for target in SERVICES:
        module, attr = target.split(":")
        live = support.LiveServer(getattr(importlib.import_module(module), attr)).__enter__()
        servers.append(live)
        urls[target] = live.url
    yield urls
    for live in servers:
        live.__exit__(None, None, None)


@pytest.mark.parametrize("target", list(SERVICES))
def test_each_service_serves_its_own_routes_and_docs(services: dict[str, str], target: str) -> None:
    with httpx.Client(base_url=services[target], timeout=10) as c:
        spec = c.get("/openapi.json")
        assert spec.status_code == 200
        assert set(spec.json()["paths"]) == SERVICES[target] | OPERATIONS
        docs = c.get("/docs")
        assert docs.status_code == 200
        assert "swagger" in docs.text.lower()
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        assert "questline_http_requests_total" in c.get("/metrics").text
        for other, path in PROBES.items():
            expected = 401 if other == target else 404
            assert c.get(path).status_code == expected, (target, path)


def test_the_all_in_one_app_serves_every_route(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == set().union(*SERVICES.values()) | OPERATIONS
    assert client.get("/docs").status_code == 200
