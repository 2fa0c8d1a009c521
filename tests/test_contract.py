"""Promises of docs/api.md (the public contract) that no other test pins down, each
checked over real HTTP."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from questline.catalog import cache
from questline.config import get_settings
from questline.infra import db
from questline.quests.rules import apply_sign_ins
from tests import factories as f


def has_utc_offset(stamp: str) -> bool:
    parsed = datetime.fromisoformat(stamp)
    return parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)


def refresh_lifetimes(user_id: int) -> list[float]:
    with db.transaction() as session:
        rows = session.execute(
            text(
                "SELECT extract(epoch FROM expires_at - created_at) FROM refresh_tokens "
                "WHERE user_id = :u ORDER BY created_at"
            ),
            {"u": user_id},
        ).all()
    return [float(r[0]) for r in rows]


def test_refresh_tokens_live_for_the_configured_ttl(make_player: Any) -> None:
    alice = make_player()
    alice.login()
    alice.refresh()  # the rotation path mints its own token
    ttl = get_settings().refresh_ttl_seconds
    assert refresh_lifetimes(alice.user_id) == [ttl, ttl]


def test_every_timestamp_carries_a_utc_offset(make_player: Any) -> None:
    alice = make_player()
    sign_in_id = alice.login()["sign_in_id"]
    with db.transaction() as session:
        auto = f.add_quest(session, auto_claim=True, streak=1, duplication=1).quest_id
        apply_sign_ins(session, event_ids=[sign_in_id])
    cache.invalidate()
    me = alice.get("/auth/me").json()
    stamps = [me["created_at"], me["last_login_at"]]
    status = alice.get(f"/sign-ins/{sign_in_id}").json()
    stamps += [status["created_at"], status["processed_at"]]
    rewards = alice.get("/me/rewards").json()
    assert [r["quest_id"] for r in rewards] == [auto]
    stamps += [rewards[0]["earned_at"], rewards[0]["claimed_at"]]
    stamps += [e["created_at"] for e in alice.get("/me/events").json()]
    assert len(stamps) >= 8
    assert all(has_utc_offset(s) for s in stamps), stamps


def test_auto_claim_rewards_count_as_claimed_and_complete_the_quest(make_player: Any) -> None:
    alice = make_player()
    with db.transaction() as session:
        auto = f.add_quest(session, auto_claim=True, streak=1, duplication=2).quest_id
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, alice.user_id, 2))
    cache.invalidate()
    quest = alice.quest(auto)
    assert (quest["completions"], quest["claimed"], quest["claimable"]) == (2, 2, 0)
    assert quest["status"] == "completed"
    assert alice.post(f"/me/quests/{auto}/claim").status_code == 409


def test_a_quest_with_rewards_left_to_claim_is_not_completed(make_player: Any) -> None:
    alice = make_player()
    with db.transaction() as session:
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, alice.user_id, 6))
    assert alice.quest()["status"] == "claimable"
    alice.post("/me/quests/1/claim")
    assert (alice.quest()["claimable"], alice.quest()["status"]) == (1, "claimable")
    alice.post("/me/quests/1/claim")
    quest = alice.quest()
    assert (quest["claimed"], quest["claimable"], quest["status"]) == (2, 0, "completed")


def test_an_event_that_is_not_a_sign_in_is_not_a_sign_in(make_player: Any) -> None:
    alice = make_player()
    sign_in_id = alice.login()["sign_in_id"]
    with db.transaction() as session:
        apply_sign_ins(session, event_ids=[sign_in_id])
    progress = [e for e in alice.get("/me/events").json() if e["type"] == "quest_progress"]
    assert progress
    assert alice.get(f"/sign-ins/{progress[0]['event_id']}").status_code == 404
    assert alice.get(f"/sign-ins/{sign_in_id}").status_code == 200


def test_before_returns_only_older_events(make_player: Any) -> None:
    alice = make_player()
    with db.transaction() as session:
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, alice.user_id, 3))
    everything = [e["event_id"] for e in alice.get("/me/events").json()]
    assert everything == sorted(everything, reverse=True)
    pivot = everything[2]
    older = alice.get("/me/events", params={"before": pivot, "limit": 2}).json()
    assert [e["event_id"] for e in older] == everything[3:5]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/auth/me"),
        ("GET", "/quests"),
        ("GET", "/quests/1"),
        ("GET", "/rewards"),
        ("GET", "/rewards/1"),
        ("GET", "/me/quests"),
        ("GET", "/me/rewards"),
        ("GET", "/me/events"),
        ("GET", "/sign-ins/1"),
        ("POST", "/me/quests/1/claim"),
        ("POST", "/rewards"),
        ("PATCH", "/quests/1"),
        ("POST", "/auth/users/1/ban"),
    ],
)
def test_a_banned_user_is_403_on_every_route(
    client: httpx.Client, admin: Any, make_player: Any, method: str, path: str
) -> None:
    alice = make_player()
    headers = alice.headers
    assert admin.post(f"/auth/users/{alice.user_id}/ban").status_code == 200
    r = client.request(method, path, headers=headers, json={})
    assert r.status_code == 403, r.text
    assert "detail" in r.json()


def test_an_empty_patch_changes_nothing(admin: Any) -> None:
    before = admin.get("/quests/1").json()
    r = admin.client.patch("/quests/1", headers=admin.headers, json={})
    assert r.status_code == 200, r.text
    assert r.json() == before == admin.get("/quests/1").json()


@pytest.mark.parametrize("field", ["streak", "duplication"])
@pytest.mark.parametrize("value", [0, -1])
def test_quest_counts_below_one_are_422(admin: Any, field: str, value: int) -> None:
    body = {
        "name": "bad",
        "description": "",
        "auto_claim": False,
        "streak": 1,
        "duplication": 1,
        "reward_id": 1,
        field: value,
    }
    assert admin.post("/quests", json=body).status_code == 422
    r = admin.client.patch("/quests/1", headers=admin.headers, json={field: value})
    assert r.status_code == 422
    assert [q["quest_id"] for q in admin.get("/quests").json()] == [1]
    assert admin.get("/quests/1").json()[field] == {"streak": 3, "duplication": 2}[field]


def test_earned_rewards_of_a_deactivated_quest_can_still_be_claimed(
    admin: Any, make_player: Any
) -> None:
    alice = make_player()
    with db.transaction() as session:
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, alice.user_id, 3))
    r = admin.client.patch("/quests/1", headers=admin.headers, json={"active": False})
    assert r.status_code == 200
    r = alice.post("/me/quests/1/claim")
    assert r.status_code == 200, r.text
    assert r.json()["balance"]["diamond"] == 10


@pytest.mark.parametrize(("length", "status"), [(255, 409), (256, 422)])
def test_idempotency_keys_hold_up_to_255_characters(
    make_player: Any, length: int, status: int
) -> None:
    alice = make_player()
    r = alice.post("/me/quests/1/claim", headers={"Idempotency-Key": "k" * length})
    assert r.status_code == status, r.text


def test_a_name_with_a_trailing_newline_is_refused(client: httpx.Client) -> None:
    r = client.post("/auth/signup", json={"user_name": "alice\n", "password": "x" * 8})
    assert r.status_code == 422


def test_retry_after_is_a_positive_integer(client: httpx.Client, make_player: Any) -> None:
    alice = make_player()
    for _ in range(get_settings().login_max_failures_per_name):
        client.post("/auth/login", json={"user_name": alice.name, "password": "wrong-pass"})
    r = client.post("/auth/login", json={"user_name": alice.name, "password": "wrong-pass"})
    assert r.status_code == 429
    assert r.headers["Retry-After"].isdigit()
    assert int(r.headers["Retry-After"]) >= 1


def test_401_says_bearer(client: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic eA=="}):
        r = client.get("/me/quests", headers=headers)
        assert r.status_code == 401
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_an_empty_idempotency_key_is_422_and_claims_nothing(make_player: Any) -> None:
    alice = make_player()
    with db.transaction() as session:
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, alice.user_id, 3))
    r = alice.post("/me/quests/1/claim", headers={"Idempotency-Key": ""})
    assert r.status_code == 422, r.text
    assert alice.quest()["claimable"] == 1


def test_switching_a_quest_to_auto_claim_credits_what_was_waiting(
    admin: Any, make_player: Any
) -> None:
    alice, bob = make_player(), make_player()
    with db.transaction() as session:
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, alice.user_id, 3))
        apply_sign_ins(session, event_ids=f.add_sign_ins(session, bob.user_id, 6))
    assert bob.post("/me/quests/1/claim").status_code == 200
    r = admin.client.patch("/quests/1", headers=admin.headers, json={"auto_claim": True})
    assert r.status_code == 200, r.text
    # "claimable: always 0 for auto-claim quests, whose rewards count as claimed"
    for player, done in ((alice, 1), (bob, 2)):
        quest = player.quest()
        assert (quest["claimed"], quest["claimable"]) == (done, 0)
        assert player.get("/auth/me").json()["diamond"] == 10 * done
        assert all(r["status"] == "claimed" for r in player.get("/me/rewards").json())
        assert player.post("/me/quests/1/claim").status_code == 409
    assert alice.quest()["status"] == "in_progress"
    assert bob.quest()["status"] == "completed"
    claims = [e for e in alice.get("/me/events").json() if e["type"] == "reward_claimed"]
    assert [(e["quest_id"], e["data"]["reward_qty"]) for e in claims] == [(1, 10)]


def test_readiness_names_the_database_when_it_is_down() -> None:
    from tests import support

    dead = f"postgresql+psycopg2://postgres@127.0.0.1:{support.free_port()}/questline"
    server = support.start_server("api.main:app", QUESTLINE_DATABASE_URL=dead)
    try:
        url: str = server.url  # type: ignore[attr-defined]
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        r = httpx.get(f"{url}/readyz", timeout=10)
        assert r.status_code == 503
        assert r.json()["failed"] == ["database"]
        assert r.json()["checks"]["broker"] == "ok"
        # A request that needs the database is a retryable 503, not a 500.
        body = {"user_name": "alice", "password": "long-enough"}
        r = httpx.post(f"{url}/auth/signup", json=body, timeout=10)
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
    finally:
        server.stop()
