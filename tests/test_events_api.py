"""POST /events and GET /events/{id} over real HTTP: API keys and scopes, every rule of a
batch (422 naming the index and field, nothing stored), all or nothing, idempotency keys
across and within batches, the age rule and the backfill scope, the per-user limit (429,
nothing stored, nothing counted), zones stamped at ingest, and the status of an event as
a real worker applies it."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from itertools import count
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from models import ApiKey, Event, User
from questline.config import get_settings
from questline.credentials import service as credentials
from questline.infra import db
from tests import factories, support

WRITE = ["events:write"]
_keys = count(1)


def make_key(scopes: list[str] | None = None) -> str:
    """A live API key's secret, created as `questline api-key create` would."""
    with db.transaction() as session:
        return credentials.create(
            session, name=f"server-{next(_keys)}", scopes=scopes or WRITE
        ).api_key


def make_users(n: int = 1, **columns: Any) -> list[int]:
    with db.transaction() as session:
        return [factories.add_user(session, **columns).user_id for _ in range(n)]


def send(client: httpx.Client, key: str | None, events: Any, **kw: Any) -> httpx.Response:
    headers = {} if key is None else {"X-API-Key": key}
    return client.post("/events", json={"events": events}, headers=headers, **kw)


def inputs() -> list[Event]:
    """Every stored gameplay event, in event_id order."""
    with db.transaction() as session:
        return list(
            session.scalars(
                select(Event).where(Event.idempotency_key.is_not(None)).order_by(Event.event_id)
            )
        )


def stored_count() -> int:
    with db.transaction() as session:
        return int(
            session.scalar(select(func.count()).where(Event.idempotency_key.is_not(None))) or 0
        )


def iso(moment: datetime) -> str:
    return moment.isoformat()


def event(user_id: int, key: str, **fields: Any) -> dict[str, Any]:
    return {"user_id": user_id, "type": "match_won", "idempotency_key": key, **fields}


@pytest.fixture
def key() -> str:
    return make_key()


@pytest.fixture
def user() -> int:
    return make_users()[0]


# --- a good batch ------------------------------------------------------------------


def test_a_batch_is_stored_in_order_with_defaults_and_answered_202(
    client: httpx.Client, key: str
) -> None:
    alice, bob = make_users(2)
    at = datetime.now(UTC) - timedelta(minutes=5)
    before = datetime.now(UTC)
    r = send(
        client,
        key,
        [
            event(
                alice,
                "a-1",
                value=2.5,
                attrs={"mode": "ranked", "kills": 7, "mvp": True},
                occurred_at=iso(at),
            ),
            event(bob, "b-1"),
            {"user_id": alice, "type": "gold_spent", "idempotency_key": "a-2", "value": 0},
        ],
    )
    after = datetime.now(UTC)
    assert r.status_code == 202, r.text
    results = r.json()["results"]
    assert [(x["idempotency_key"], x["status"]) for x in results] == [
        ("a-1", "accepted"),
        ("b-1", "accepted"),
        ("a-2", "accepted"),
    ]
    stored = {e.event_id: e for e in inputs()}
    assert sorted(stored) == sorted(x["event_id"] for x in results)
    first, second, third = (stored[x["event_id"]] for x in results)
    assert (first.user_id, first.type, first.value) == (alice, "match_won", Decimal("2.5"))
    assert first.attrs == {"mode": "ranked", "kills": 7, "mvp": True}
    assert first.occurred_at == at
    assert first.tz == "UTC"
    assert first.processed_at is None
    assert first.quest_id is None
    # Defaults: value 1, no attrs, occurred when stored.
    assert (second.value, second.attrs) == (Decimal(1), {})
    assert second.occurred_at is not None
    assert before <= second.occurred_at <= after
    assert third.value == Decimal(0)
    assert {e.api_key_id for e in stored.values()} != {None}


def test_event_ids_follow_the_order_of_the_batch(client: httpx.Client, key: str) -> None:
    # Users in no particular order and a user's events apart: the stored ids still follow
    # the request (the drain applies a player's events in event_id order).
    users = make_users(4)
    order = [users[2], users[0], users[3], users[0], users[1], users[2], users[3], users[1]]
    r = send(client, key, [event(u, f"k{i}") for i, u in enumerate(order)])
    assert r.status_code == 202, r.text
    ids = [x["event_id"] for x in r.json()["results"]]
    assert ids == sorted(ids)
    assert [(e.user_id, e.idempotency_key) for e in inputs()] == [
        (u, f"k{i}") for i, u in enumerate(order)
    ]


def test_the_boundaries_of_every_rule_are_accepted(client: httpx.Client, user: int) -> None:
    key = make_key()
    now = datetime.now(UTC)
    max_age = get_settings().event_max_age_seconds
    r = send(
        client,
        key,
        [
            event(user, "k" * 255, type="a" * 64, value=1_000_000_000),
            event(user, "six-decimals", type="x.y:z-1_2", value=0.123456),
            event(
                user, "sixteen-attrs", attrs={f"{i:02d}" + "a" * 62: "s" * 256 for i in range(16)}
            ),
            event(user, "unicode-key é ✓", occurred_at=iso(now + timedelta(seconds=30))),
            event(user, "nearly-too-old", occurred_at=iso(now - timedelta(seconds=max_age - 120))),
            event(user, "nulls", value=None, attrs=None, occurred_at=None),
            event(user, "offset", occurred_at=iso(now.astimezone(KATHMANDU) - timedelta(hours=1))),
        ],
    )
    assert r.status_code == 202, r.text
    assert [x["status"] for x in r.json()["results"]] == ["accepted"] * 7
    assert stored_count() == 7


# --- every rule: 422 naming the index and the field, nothing stored --------------------

KATHMANDU = timezone(timedelta(hours=5, minutes=45))
# Placeholders for JSON text that json.dumps cannot write, or times relative to the request.
RAW: dict[str, Callable[[], str]] = {
    "__INFINITE__": lambda: "1e400",
    "__FUTURE__": lambda: json.dumps(iso(datetime.now(UTC) + timedelta(minutes=2))),
    "__TOO_OLD__": lambda: json.dumps(iso(datetime.now(UTC) - timedelta(days=1, minutes=5))),
}
BAD_EVENTS: list[tuple[str, dict[str, Any], str]] = [
    ("no-user", {"user_id": None}, "user_id"),
    ("user-string", {"user_id": "1"}, "user_id"),
    ("user-zero", {"user_id": 0}, "user_id"),
    ("user-bool", {"user_id": True}, "user_id"),
    ("type-missing", {"type": None}, "type"),
    ("type-empty", {"type": ""}, "type"),
    ("type-65", {"type": "a" * 65}, "type"),
    ("type-upper", {"type": "Match_Won"}, "type"),
    ("type-space", {"type": "match won"}, "type"),
    ("type-number", {"type": 5}, "type"),
    ("type-sign-in", {"type": "sign_in"}, "type"),
    ("type-quest-completed", {"type": "quest_completed"}, "type"),
    ("type-quest-any", {"type": "quest_anything"}, "type"),
    ("type-reward-claimed", {"type": "reward_claimed"}, "type"),
    ("value-negative", {"value": -1}, "value"),
    ("value-too-big", {"value": 1_000_000_001}, "value"),
    ("value-string", {"value": "5"}, "value"),
    ("value-bool", {"value": True}, "value"),
    ("value-7-decimals", {"value": 0.1234567}, "value"),
    ("value-object", {"value": {"n": 1}}, "value"),
    ("attrs-list", {"attrs": [1]}, "attrs"),
    ("attrs-17", {"attrs": {f"k{i}": i for i in range(17)}}, "attrs"),
    ("attrs-empty-name", {"attrs": {"": 1}}, "attrs"),
    ("attrs-65-name", {"attrs": {"a" * 65: 1}}, "attrs"),
    ("attrs-nul-name", {"attrs": {"a\x00": 1}}, "attrs"),
    ("attrs-257-string", {"attrs": {"mode": "s" * 257}}, "attrs.mode"),
    ("attrs-nul-string", {"attrs": {"mode": "a\x00b"}}, "attrs.mode"),
    ("attrs-surrogate", {"attrs": {"mode": "\ud800"}}, "attrs.mode"),
    ("attrs-object", {"attrs": {"mode": {"a": 1}}}, "attrs.mode"),
    ("attrs-list-value", {"attrs": {"mode": [1]}}, "attrs.mode"),
    ("attrs-null-value", {"attrs": {"mode": None}}, "attrs.mode"),
    ("attrs-huge-int", {"attrs": {"n": 2**64}}, "attrs.n"),
    ("attrs-infinite", {"attrs": {"n": "__INFINITE__"}}, "attrs.n"),
    ("key-missing", {"idempotency_key": None}, "idempotency_key"),
    ("key-empty", {"idempotency_key": ""}, "idempotency_key"),
    ("key-256", {"idempotency_key": "k" * 256}, "idempotency_key"),
    ("key-newline", {"idempotency_key": "a\nb"}, "idempotency_key"),
    ("key-nul", {"idempotency_key": "a\x00b"}, "idempotency_key"),
    ("key-number", {"idempotency_key": 7}, "idempotency_key"),
    ("at-future", {"occurred_at": "__FUTURE__"}, "occurred_at"),
    ("at-too-old", {"occurred_at": "__TOO_OLD__"}, "occurred_at"),
    ("at-naive", {"occurred_at": "2026-01-01T10:00:00"}, "occurred_at"),
    ("at-garbage", {"occurred_at": "yesterday"}, "occurred_at"),
    ("at-number", {"occurred_at": 1700000000}, "occurred_at"),
    ("at-month-13", {"occurred_at": "2026-13-01T00:00:00Z"}, "occurred_at"),
    ("unknown-field", {"colour": "red"}, "colour"),
]


@pytest.mark.parametrize(("case", "fields", "field"), BAD_EVENTS, ids=[c[0] for c in BAD_EVENTS])
def test_an_invalid_event_is_422_naming_index_and_field_and_nothing_is_stored(
    client: httpx.Client, key: str, user: int, case: str, fields: dict[str, Any], field: str
) -> None:
    bad = {**event(user, "bad"), **fields}
    for name, value in fields.items():
        if value is None and name in ("user_id", "type", "idempotency_key"):
            del bad[name]  # "missing" cases
    body = {"events": [event(user, "good-0"), event(user, "good-1"), bad]}
    # ASCII JSON: a lone surrogate travels as the escape \\ud800, as a client would send it.
    text = json.dumps(body)
    for placeholder, raw in RAW.items():
        text = text.replace(json.dumps(placeholder), raw())
    content = text.encode()
    r = client.post(
        "/events",
        content=content,
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str), detail
    assert detail.startswith(f"events[2].{field}"), detail
    assert stored_count() == 0


def test_an_unknown_user_is_422_naming_its_index_and_nothing_is_stored(
    client: httpx.Client, key: str, user: int
) -> None:
    r = send(client, key, [event(user, "a"), event(user + 1000, "b"), event(user, "c")])
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("events[1].user_id"), r.text
    assert str(user + 1000) in r.json()["detail"]
    assert stored_count() == 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"events": []}, 422),
        ({"events": "x"}, 422),
        ({}, 422),
        ([], 422),
        ({"events": [], "extra": 1}, 422),
        ({"events": [5]}, 422),
    ],
    ids=["empty", "not-a-list", "no-events", "top-level-list", "extra-field", "not-an-object"],
)
def test_a_malformed_batch_is_422(client: httpx.Client, key: str, body: Any, status: int) -> None:
    r = client.post("/events", json=body, headers={"X-API-Key": key})
    assert r.status_code == status, r.text
    assert r.json()["detail"].startswith("events"), r.text


def test_more_than_1000_events_is_422_and_1000_are_fine(
    client: httpx.Client, key: str, user: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "events_per_user_per_minute", 5000)
    r = send(client, key, [event(user, f"k{i}") for i in range(1001)])
    assert r.status_code == 422, r.text
    assert "1000" in r.json()["detail"]
    assert stored_count() == 0
    r = send(client, key, [event(user, f"k{i}") for i in range(1000)])
    assert r.status_code == 202, r.text
    assert len(r.json()["results"]) == 1000
    assert stored_count() == 1000


@pytest.mark.parametrize(
    "body", [b"not json", b'{"events": [', b'{"events": [{"value": NaN}]}', b"[" * 50_000]
)
def test_a_body_that_is_not_json_is_400(client: httpx.Client, key: str, body: bytes) -> None:
    r = client.post(
        "/events", content=body, headers={"X-API-Key": key, "Content-Type": "application/json"}
    )
    assert r.status_code == 400, r.text
    assert stored_count() == 0


def test_a_body_over_4_mib_is_413(client: httpx.Client, key: str) -> None:
    r = client.post(
        "/events",
        content=b'{"events": "' + b"x" * (4 * 1024 * 1024) + b'"}',
        headers={"X-API-Key": key, "Content-Type": "application/json"},
    )
    assert r.status_code == 413, r.text


# --- idempotency keys ----------------------------------------------------------------


def test_a_retried_key_returns_the_first_event_and_stores_nothing_new(
    client: httpx.Client, key: str, user: int
) -> None:
    first = send(client, key, [event(user, "match-1", value=3)]).json()["results"][0]
    retry = send(
        client, key, [event(user, "match-1", type="something_else", value=9), event(user, "m2")]
    )
    assert retry.status_code == 202, retry.text
    again, new = retry.json()["results"]
    assert again == {
        "idempotency_key": "match-1",
        "event_id": first["event_id"],
        "status": "duplicate",
    }
    assert new["status"] == "accepted"
    assert new["event_id"] != first["event_id"]
    stored = inputs()
    assert len(stored) == 2
    assert (stored[0].type, stored[0].value) == ("match_won", Decimal(3))


def test_duplicates_within_a_batch_return_the_first_and_keys_are_per_user(
    client: httpx.Client, key: str
) -> None:
    alice, bob = make_users(2)
    r = send(
        client,
        key,
        [
            event(alice, "same", value=1),
            event(bob, "same", value=2),
            event(alice, "same", value=3),
            event(alice, "other"),
        ],
    )
    assert r.status_code == 202, r.text
    a1, b1, a2, other = r.json()["results"]
    assert (a1["status"], b1["status"], a2["status"], other["status"]) == (
        "accepted",
        "accepted",
        "duplicate",
        "accepted",
    )
    assert a2["event_id"] == a1["event_id"] != b1["event_id"]
    stored = {e.event_id: e for e in inputs()}
    assert len(stored) == 3
    assert stored[a1["event_id"]].value == Decimal(1)


def test_the_same_key_sent_in_parallel_is_stored_once(client: httpx.Client, key: str) -> None:
    import concurrent.futures

    user = make_users()[0]

    def post(i: int) -> Any:
        with httpx.Client(base_url=str(client.base_url), timeout=30) as c:
            return send(c, key, [event(user, "contested", value=i)]).json()["results"][0]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(post, range(16)))
    assert len({a["event_id"] for a in answers}) == 1
    assert sorted(a["status"] for a in answers).count("accepted") == 1
    assert stored_count() == 1


# --- keys and scopes ------------------------------------------------------------------


def test_requests_without_a_valid_key_are_401(client: httpx.Client, user: int) -> None:
    batch = [event(user, "k")]
    assert send(client, None, batch).status_code == 401
    assert send(client, "qlk_not-a-key", batch).status_code == 401
    assert send(client, "", batch).status_code == 401
    revoked = make_key()
    with db.transaction() as session:
        key_id = credentials.authenticate(session, revoked, scope=None).key_id
        credentials.revoke(session, key_id=key_id)
    assert send(client, revoked, batch).status_code == 401
    assert client.get("/events/1").status_code == 401
    assert client.get("/events/1", headers={"X-API-Key": revoked}).status_code == 401
    assert stored_count() == 0


def revoke_elsewhere(api_key: str) -> None:
    """Revoke a key as another process would: this process's memory of it stays."""
    with db.transaction() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == credentials.hash_key(api_key))
            .values(revoked_at=func.now())
        )


def test_a_key_revoked_elsewhere_stops_at_once_though_remembered(
    client: httpx.Client, key: str, user: int
) -> None:
    assert send(client, key, [event(user, "before")]).status_code == 202  # remembered now
    revoke_elsewhere(key)
    assert send(client, key, [event(user, "after")]).status_code == 401
    assert send(client, key, [event(user, "before")]).status_code == 401  # a retry too
    assert [e.idempotency_key for e in inputs()] == ["before"]


@pytest.mark.parametrize("refusal", ["invalid-event", "unknown-user", "over-the-limit", "not-json"])
def test_a_revoked_key_hears_401_before_any_other_refusal(
    client: httpx.Client, user: int, limit_of_5: int, refusal: str
) -> None:
    # The first request after the revocation, so this process still remembers the key.
    key = make_key()
    assert send(client, key, [event(user, "before")]).status_code == 202
    revoke_elsewhere(key)
    bodies: dict[str, Any] = {
        "invalid-event": {"json": {"events": [event(user, "k", value=-1)]}},
        "unknown-user": {"json": {"events": [event(10**9, "k")]}},
        "over-the-limit": {"json": {"events": [event(user, f"k{i}") for i in range(6)]}},
        "not-json": {"content": b"not json"},
    }
    r = client.post("/events", headers={"X-API-Key": key}, **bodies[refusal])
    assert r.status_code == 401, r.text
    assert stored_count() == 1


def test_a_remembered_key_keeps_its_scopes(client: httpx.Client, user: int) -> None:
    # Remembered after a refused request and after a good one: the scope rule still holds.
    write_only = make_key()
    old = iso(datetime.now(UTC) - timedelta(days=3))
    for attempt in range(2):
        r = send(client, write_only, [event(user, f"old{attempt}", occurred_at=old)])
        assert r.status_code == 422, r.text
        assert send(client, write_only, [event(user, f"new{attempt}")]).status_code == 202
    backfill_only = make_key(["events:backfill"])
    for _ in range(2):
        assert send(client, backfill_only, [event(user, "k")]).status_code == 403
    assert stored_count() == 2


def test_a_player_token_is_never_a_key(client: httpx.Client, user: int) -> None:
    headers = factories.bearer(user)
    token = headers["Authorization"].removeprefix("Bearer ")
    r = client.post("/events", json={"events": [event(user, "k")]}, headers=headers)
    assert r.status_code == 401, r.text
    r = client.post("/events", json={"events": [event(user, "k")]}, headers={"X-API-Key": token})
    assert r.status_code == 401, r.text
    admin_headers = factories.bearer(user, role="admin")
    assert client.get("/events/1", headers=admin_headers).status_code == 401
    assert stored_count() == 0


def test_a_key_without_events_write_is_403(client: httpx.Client, user: int) -> None:
    backfill_only = make_key(["events:backfill"])
    r = send(client, backfill_only, [event(user, "k")])
    assert r.status_code == 403, r.text
    assert "events:write" in r.json()["detail"]
    assert stored_count() == 0


def test_old_events_need_the_backfill_scope(client: httpx.Client, user: int) -> None:
    long_ago = iso(datetime.now(UTC) - timedelta(days=400))
    r = send(client, make_key(), [event(user, "old", occurred_at=long_ago)])
    assert r.status_code == 422, r.text
    assert "events:backfill" in r.json()["detail"]
    r = send(
        client,
        make_key(["events:write", "events:backfill"]),
        [event(user, "old", occurred_at=long_ago)],
    )
    assert r.status_code == 202, r.text
    assert inputs()[0].occurred_at == datetime.fromisoformat(long_ago)
    # Even a backfill stays after 1970 and no more than 60 s ahead.
    for at in ("1969-12-31T23:59:59Z", iso(datetime.now(UTC) + timedelta(minutes=5))):
        r = send(
            client,
            make_key(["events:write", "events:backfill"]),
            [event(user, "odd", occurred_at=at)],
        )
        assert r.status_code == 422, r.text


# --- the per-user limit ----------------------------------------------------------------


@pytest.fixture
def limit_of_5(monkeypatch: pytest.MonkeyPatch) -> int:
    # The server runs in this process: its settings object is this one.
    monkeypatch.setattr(get_settings(), "events_per_user_per_minute", 5)
    return 5


def test_over_the_limit_is_429_with_retry_after_and_nothing_stored(
    client: httpx.Client, key: str, limit_of_5: int
) -> None:
    alice, bob = make_users(2)
    assert send(client, key, [event(alice, f"a{i}") for i in range(3)]).status_code == 202
    # Alice would reach 6: the whole batch is refused, Bob's event too.
    r = send(
        client, key, [event(bob, "b0"), event(alice, "a3"), event(alice, "a4"), event(alice, "a5")]
    )
    assert r.status_code == 429, r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert f"user {alice}" in r.json()["detail"]
    assert stored_count() == 3
    # Nothing of the refused batch was counted: Alice has 2 left, Bob all 5.
    assert send(client, key, [event(alice, "a3"), event(alice, "a4")]).status_code == 202
    assert send(client, key, [event(alice, "a5")]).status_code == 429
    assert send(client, key, [event(bob, f"b{i}") for i in range(5)]).status_code == 202
    assert stored_count() == 10


def test_a_refused_batch_gives_its_count_back(
    client: httpx.Client, key: str, user: int, limit_of_5: int
) -> None:
    # Refused after counting (an unknown user is found in the database), or before.
    r = send(client, key, [event(user, f"k{i}") for i in range(4)] + [event(10**9, "x")])
    assert r.status_code == 422, r.text
    r = send(client, key, [event(user, f"k{i}") for i in range(4)] + [event(user, "x", value=-1)])
    assert r.status_code == 422, r.text
    assert send(client, key, [event(user, f"k{i}") for i in range(5)]).status_code == 202


def test_an_unknown_user_is_422_even_over_the_limit(
    client: httpx.Client, key: str, user: int, limit_of_5: int
) -> None:
    # The batch is checked whole before it is counted, as without the limit.
    r = send(client, key, [event(user, f"k{i}") for i in range(6)] + [event(10**9, "x")])
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("events[6].user_id"), r.text
    assert send(client, key, [event(user, f"k{i}") for i in range(5)]).status_code == 202


def test_one_batch_over_the_limit_for_one_user_is_429(
    client: httpx.Client, key: str, user: int, limit_of_5: int
) -> None:
    r = send(client, key, [event(user, f"k{i}") for i in range(6)])
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert stored_count() == 0


# --- zones ---------------------------------------------------------------------------


def set_zone(user_id: int, zone: str) -> None:
    with db.transaction() as session:
        session.execute(update(User).where(User.user_id == user_id).values(timezone=zone))


def test_each_event_is_stamped_with_its_users_zone_when_stored(
    client: httpx.Client, key: str
) -> None:
    kathmandu, utc = make_users(2)
    set_zone(kathmandu, "Asia/Kathmandu")
    r = send(client, key, [event(kathmandu, "k1"), event(utc, "u1")])
    assert r.status_code == 202, r.text
    set_zone(kathmandu, "America/New_York")
    assert send(client, key, [event(kathmandu, "k2"), event(kathmandu, "k1")]).status_code == 202
    zones = {(e.user_id, e.idempotency_key): e.tz for e in inputs()}
    assert zones == {
        (kathmandu, "k1"): "Asia/Kathmandu",  # the retry kept the first stamp
        (utc, "u1"): "UTC",
        (kathmandu, "k2"): "America/New_York",
    }


# --- GET /events/{id} -------------------------------------------------------------------


def test_an_event_is_pending_until_a_worker_applies_it(
    client: httpx.Client, worker: support.Process, user: int
) -> None:
    with db.transaction() as session:
        factories.add_v2_quest(session, target=2, trigger={"event": "match_won"})
    writer = make_key()
    reader = make_key(["events:backfill"])  # any live key may read
    # Stored without waking anyone (a direct insert), so it is surely pending at first.
    with db.transaction() as session:
        [pending_id] = factories.add_events(
            session, user, [factories.GameEvent("match_won", datetime.now(UTC))]
        )
        factories.keep_from_sweeper(session, [pending_id])
    r = client.get(f"/events/{pending_id}", headers={"X-API-Key": reader})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "pending"
    assert body["processed_at"] is None
    assert (body["user_id"], body["type"]) == (user, "match_won")
    # Sent over HTTP, the worker is woken and applies it.
    r = send(client, writer, [event(user, "m1")])
    event_id = r.json()["results"][0]["event_id"]

    def status() -> dict[str, Any]:
        answer: dict[str, Any] = client.get(
            f"/events/{event_id}", headers={"X-API-Key": writer}
        ).json()
        return answer

    support.wait_until(lambda: status()["status"] == "processed", 30, "the event applied")
    body = status()
    assert set(body) == {
        "event_id",
        "user_id",
        "type",
        "status",
        "occurred_at",
        "created_at",
        "processed_at",
    }
    assert datetime.fromisoformat(body["processed_at"]) >= datetime.fromisoformat(
        body["created_at"]
    )


def test_unknown_events_and_history_entries_are_404(
    client: httpx.Client, key: str, user: int
) -> None:
    assert client.get("/events/999999", headers={"X-API-Key": key}).status_code == 404
    with db.transaction() as session:
        history = Event(user_id=user, type="quest_progress", data={}, created_at=datetime.now(UTC))
        session.add(history)
        session.flush()
        history_id = history.event_id
    assert client.get(f"/events/{history_id}", headers={"X-API-Key": key}).status_code == 404
    assert client.get("/events/0", headers={"X-API-Key": key}).status_code == 422


# --- properties ------------------------------------------------------------------------

_batches = count(1)
TYPES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.:-", min_size=1, max_size=64)
GOOD_TYPES = TYPES.filter(lambda t: not (t == "sign_in" or t.startswith(("quest_", "reward_"))))
ATTR_VALUES = st.one_of(
    st.text(max_size=256).filter(lambda s: "\x00" not in s),
    st.integers(-(2**63) + 1, 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
)
VALUES = st.one_of(
    st.integers(0, 10**9),
    st.decimals(0, 10**9, places=6, allow_nan=False, allow_infinity=False).map(float),
)


def good_event(users: list[int]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "user_id": st.sampled_from(users),
            "type": GOOD_TYPES,
            "idempotency_key": st.sampled_from(["a", "b", "c", "key with spaces", "ü"]),
        },
        optional={
            "value": VALUES,
            "attrs": st.dictionaries(
                st.text(min_size=1, max_size=64).filter(lambda s: "\x00" not in s),
                ATTR_VALUES,
                max_size=16,
            ),
            "occurred_at": st.integers(-3600, 30).map(
                lambda s: iso(datetime.now(UTC) + timedelta(seconds=s))
            ),
        },
    )


@pytest.fixture
def prop_users() -> list[int]:
    return make_users(2)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_valid_batch_gets_one_answer_per_event_in_order(
    client: httpx.Client,
    key: str,
    prop_users: list[int],
    data: st.DataObject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(get_settings(), "events_per_user_per_minute", 10**6)
    batch = data.draw(st.lists(good_event(prop_users), min_size=1, max_size=30))
    # Fresh keys for this example, repeated inside the batch as drawn.
    prefix = f"ex{next(_batches)}-"
    for e in batch:
        e["idempotency_key"] = prefix + e["idempotency_key"]
    before = stored_count()
    r = send(client, key, batch)
    assert r.status_code == 202, r.text
    results = r.json()["results"]
    assert [x["idempotency_key"] for x in results] == [e["idempotency_key"] for e in batch]
    first_of: dict[tuple[int, str], int] = {}
    for e, x in zip(batch, results, strict=True):
        pair = (e["user_id"], e["idempotency_key"])
        if pair in first_of:
            assert (x["status"], x["event_id"]) == ("duplicate", first_of[pair])
        else:
            assert x["status"] == "accepted"
            first_of[pair] = x["event_id"]
    assert len(set(first_of.values())) == len(first_of)
    assert stored_count() == before + len(first_of)


BREAKERS: list[tuple[str, Any]] = [
    ("type", st.sampled_from(["sign_in", "quest_x", "reward_y", "", "UPPER", "a" * 65])),
    (
        "value",
        st.one_of(
            st.integers(max_value=-1), st.integers(min_value=10**9 + 1), st.text(), st.booleans()
        ),
    ),
    ("idempotency_key", st.one_of(st.just(""), st.text(min_size=256, max_size=300), st.integers())),
    (
        "attrs",
        st.one_of(
            st.lists(st.integers()),
            st.dictionaries(
                st.text(min_size=1, max_size=8), st.integers(), min_size=17, max_size=20
            ),
        ),
    ),
    ("occurred_at", st.sampled_from(["soon", "2026-01-01T00:00:00", "2001-01-01T00:00:00Z"])),
    ("user_id", st.sampled_from([0, -1, 10**12, "1"])),
]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_invalid_batch_stores_nothing(
    client: httpx.Client,
    key: str,
    prop_users: list[int],
    data: st.DataObject,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(get_settings(), "events_per_user_per_minute", 10**6)
    batch = data.draw(st.lists(good_event(prop_users), min_size=1, max_size=20))
    index = data.draw(st.integers(0, len(batch) - 1))
    field, breaker = data.draw(st.sampled_from(BREAKERS))
    prefix = f"bad{next(_batches)}-"
    for e in batch:
        e["idempotency_key"] = prefix + e["idempotency_key"]
    batch[index][field] = data.draw(breaker)
    before = stored_count()
    r = send(client, key, batch)
    assert r.status_code == 422, r.text
    # The first bad event is named: the broken one, unless drawn data broke an earlier one.
    assert r.json()["detail"].startswith("events["), r.text
    assert stored_count() == before


@pytest.mark.parametrize("prepared", [True, False])
def test_the_batch_insert_with_and_without_a_prepared_statement(
    prepared: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a pooler in transaction mode (QUESTLINE_DATABASE_PREPARED_STATEMENTS=false)
    the insert is sent whole and leaves no prepared statement on the connection; the
    answers are the same either way: new events stored, an unknown user refused."""
    from sqlalchemy import text

    from questline.events import repository as events_repository
    from questline.events.validation import NewEvent

    monkeypatch.setattr(get_settings(), "database_prepared_statements", prepared)
    (user,) = make_users()
    with db.transaction() as session:
        key_id = credentials.create(session, name="pooled", scopes=WRITE).key.key_id
    now = datetime.now(UTC)

    def event(user_id: int, key: str) -> NewEvent:
        return NewEvent(user_id=user_id, type="match.won", occurred_at=now,
                        value=Decimal(1), attrs={}, idempotency_key=key)  # fmt: skip

    with db.transaction() as session:
        connection = session.connection()  # pooled: clear what earlier tests prepared
        connection.exec_driver_sql("DEALLOCATE ALL")
        connection.info.pop("questline_insert_events", None)
        stored = events_repository.insert_new(
            session, [event(user, "a"), event(user, "b")], api_key_id=key_id, now=now
        )
        refused = events_repository.insert_new(
            session, [event(user, "c"), event(10**9, "d")], api_key_id=key_id, now=now
        )
        statements = session.execute(text("SELECT name FROM pg_prepared_statements")).scalars()
        names = set(statements)
    assert set(stored.stored) == {(user, "a"), (user, "b")}
    assert (refused.stored, refused.missing_users) == ({}, frozenset({10**9}))
    assert ("questline_insert_events" in names) is prepared
