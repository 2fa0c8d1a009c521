"""The player's profile over real HTTP: PATCH /auth/me (time zone), /auth/me with the
wallet, sign-ins stored as inputs stamped with the zone (login and both refresh paths),
and a zone change that applies only to events stored after it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from models import Event, EventType, User
from questline.credentials import service as credentials
from questline.infra import db
from tests import factories

USER_FIELDS = {
    "user_id",
    "user_name",
    "status",
    "gold",
    "diamond",
    "created_at",
    "last_login_at",
    "timezone",
    "wallet",
}


def stored_zone(user_id: int) -> str:
    with db.transaction() as session:
        return session.get_one(User, user_id).timezone


def patch_me(client: httpx.Client, headers: dict[str, str], body: Any) -> httpx.Response:
    return client.patch("/auth/me", json=body, headers=headers)


def test_a_player_sets_their_zone(client: httpx.Client, make_player: Any) -> None:
    alice = make_player("alice")
    assert alice.get("/auth/me").json()["timezone"] == "UTC"
    r = patch_me(client, alice.headers, {"timezone": "Asia/Kathmandu"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == USER_FIELDS
    assert r.json()["timezone"] == "Asia/Kathmandu"
    assert r.json() == alice.get("/auth/me").json()
    assert stored_zone(alice.user_id) == "Asia/Kathmandu"
    assert patch_me(client, alice.headers, {"timezone": "UTC"}).json()["timezone"] == "UTC"


@pytest.mark.parametrize(
    "body",
    [
        {"timezone": "Mars/Olympus"},
        {"timezone": "europe/paris"},
        {"timezone": "../../../etc/passwd"},
        {"timezone": "/usr/share/zoneinfo/UTC"},
        {"timezone": ""},
        {"timezone": "x" * 65},
        {"timezone": "Europe/Paris\x00"},
        {"timezone": 5},
        {"timezone": None},
        {},
        {"timezone": "Europe/Paris", "user_name": "mallory"},
        {"timezone": "Europe/Paris", "diamond": 1000},
        ["Europe/Paris"],
    ],
)
def test_an_unknown_zone_or_another_field_is_422_and_changes_nothing(
    client: httpx.Client, body: Any
) -> None:
    with db.transaction() as session:
        user_id = factories.add_user(session, "alice").user_id
    r = patch_me(client, factories.bearer(user_id), body)
    assert r.status_code == 422, r.text
    assert stored_zone(user_id) == "UTC"
    with db.transaction() as session:
        user = session.get_one(User, user_id)
        assert user.user_name == "alice"
        assert factories.wallet_of(session, user_id)["diamond"] == 0


def test_patch_me_needs_a_valid_token(client: httpx.Client) -> None:
    assert client.patch("/auth/me", json={"timezone": "UTC"}).status_code == 401
    with db.transaction() as session:
        user_id = factories.add_user(session, status="banned").user_id
    r = patch_me(client, factories.bearer(user_id), {"timezone": "Europe/Paris"})
    assert r.status_code == 403
    assert stored_zone(user_id) == "UTC"


def test_me_reads_gold_and_diamond_and_every_item_from_the_wallet(
    client: httpx.Client,
) -> None:
    with db.transaction() as session:
        user_id = factories.add_user(session).user_id
        factories.set_balance(session, user_id, "diamond", 30)
        factories.set_balance(session, user_id, "chest_epic", 2)
    body = client.get("/auth/me", headers=factories.bearer(user_id)).json()
    assert (body["gold"], body["diamond"]) == (0, 30)
    assert body["wallet"] == {"gold": 0, "diamond": 30, "chest_epic": 2}
    assert (
        body["wallet"]
        == client.get("/me/wallet", headers=factories.bearer(user_id)).json()["balances"]
    )


def sign_in_row(sign_in_id: int) -> Event:
    with db.transaction() as session:
        return session.get_one(Event, sign_in_id)


def test_every_sign_in_is_an_input_stamped_with_the_players_zone(
    client: httpx.Client, make_player: Any
) -> None:
    alice = make_player("alice")
    first = alice.login()
    assert patch_me(client, alice.headers, {"timezone": "America/New_York"}).status_code == 200
    by_login = alice.login()
    by_refresh = alice.refresh()  # PostgreSQL: the one-statement refresh
    rows = [sign_in_row(s["sign_in_id"]) for s in (first, by_login, by_refresh)]
    for row in rows:
        assert row.type == EventType.SIGN_IN
        assert row.user_id == alice.user_id
        assert row.occurred_at == row.created_at
        assert row.value == 1
        assert row.attrs in (None, {})
    assert [row.tz for row in rows] == ["UTC", "America/New_York", "America/New_York"]


def test_a_zone_change_applies_to_events_stored_after_it(
    client: httpx.Client, make_player: Any
) -> None:
    alice = make_player("alice")
    with db.transaction() as session:
        key = credentials.create(session, name="server", scopes=["events:write"]).api_key

    def send(*keys: str) -> list[int]:
        batch = [
            {"user_id": alice.user_id, "type": "match_won", "idempotency_key": k} for k in keys
        ]
        r = client.post("/events", json={"events": batch}, headers={"X-API-Key": key})
        assert r.status_code == 202, r.text
        return [x["event_id"] for x in r.json()["results"]]

    [before] = send("m1")
    assert patch_me(client, alice.headers, {"timezone": "Australia/Lord_Howe"}).status_code == 200
    retried, after = send("m1", "m2")
    assert retried == before
    with db.transaction() as session:
        zones = dict(
            session.execute(
                select(Event.idempotency_key, Event.tz).where(Event.user_id == alice.user_id)
            ).all()
        )
    # None: the sign-in of the login that made the token, before the change.
    assert zones == {None: "UTC", "m1": "UTC", "m2": "Australia/Lord_Howe"}
    assert after != before
