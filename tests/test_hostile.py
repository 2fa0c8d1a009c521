"""Hostile input over real HTTP: schema fuzzing of every service, other users' ids,
login abuse, and bodies built to hurt. Nothing may answer 5xx or change state."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks

from api.auth.main import app as auth_app
from api.catalog.main import app as catalog_app
from api.limits import MAX_BODY_BYTES
from api.processing.main import app as processing_app
from models import User
from questline import security
from questline.infra import db
from tests import support

# --- schema fuzzing ---------------------------------------------------------------

# Each service's own OpenAPI document; the all-in-one server serves the same paths.
SCHEMAS = {
    "auth": schemathesis.openapi.from_dict(auth_app.openapi()),
    "catalog": schemathesis.openapi.from_dict(catalog_app.openapi()),
    # GET /me/stream answers a valid request with a stream that never ends by itself:
    # its bad inputs are tested in tests/test_live.py.
    "processing": schemathesis.openapi.from_dict(processing_app.openapi()).exclude(
        path="/me/stream"
    ),
}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]
FUZZ = settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def token_for(role: str) -> str:
    with db.transaction() as s:
        user = User(user_name=f"fuzz-{role}", password_hash="x", role=role)
        s.add(user)
        s.flush()
        user_id = user.user_id
    return security.mint_access_token(user_id, role)[0]


@pytest.fixture
def tokens() -> dict[str, str | None]:
    return {"none": None, "player": token_for("player"), "admin": token_for("admin")}


def fuzz(case: Any, server: support.LiveServer, tokens: dict[str, str | None]) -> None:
    for token in tokens.values():
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        case.call_and_validate(base_url=server.url, headers=headers, checks=CHECKS, timeout=30)


@SCHEMAS["auth"].parametrize()
@FUZZ
def test_auth_service_survives_fuzzing(case: Any, server: Any, tokens: Any) -> None:
    fuzz(case, server, tokens)


@SCHEMAS["catalog"].parametrize()
@FUZZ
def test_catalog_service_survives_fuzzing(case: Any, server: Any, tokens: Any) -> None:
    fuzz(case, server, tokens)


@SCHEMAS["processing"].parametrize()
@FUZZ
def test_processing_service_survives_fuzzing(case: Any, server: Any, tokens: Any) -> None:
    fuzz(case, server, tokens)


# --- BOLA: user A against user B's objects ---------------------------------------


def snapshot(player: Any) -> dict[str, Any]:
    """Everything B can see of B's own state."""
    return {
        path: player.get(path).json()
        for path in ("/auth/me", "/me/quests", "/me/rewards", "/me/events?limit=500")
    }


def test_a_user_cannot_reach_or_change_another_users_objects(make_player: Any, worker: Any) -> None:
    alice, bob = make_player("alice"), make_player("bob")
    bob_sign_ins = [bob.login()["sign_in_id"]] + [bob.refresh()["sign_in_id"] for _ in range(3)]
    for s in bob_sign_ins:
        bob.wait_processed(s)
    alice.wait_processed(alice.login()["sign_in_id"])
    assert bob.quest()["claimable"] == 1
    r = bob.post("/me/quests/1/claim", headers={"Idempotency-Key": "shared-key"})
    assert r.status_code == 200, r.text
    before = snapshot(bob)

    for sign_in_id in bob_sign_ins:
        r = alice.get(f"/sign-ins/{sign_in_id}")
        assert r.status_code == 404, (sign_in_id, r.text)
        assert str(bob.user_id) not in r.text
    # Quest ids are global: claiming one claims only the caller's own rewards.
    r = alice.post("/me/quests/1/claim")
    assert r.status_code == 409, r.text
    # Idempotency-Keys are per user: Bob's key gives Alice nothing of Bob's.
    r = alice.post("/me/quests/1/claim", headers={"Idempotency-Key": "shared-key"})
    assert r.status_code == 409, r.text
    # Paging history from one of Bob's event ids shows only Alice's events.
    newest_of_bob = before["/me/events?limit=500"][0]["event_id"]
    r = alice.get("/me/events", params={"before": newest_of_bob + 1, "limit": 500})
    assert r.status_code == 200
    assert r.json()
    assert all(e["data"].get("user_reward_id") is None for e in r.json())
    assert {e["event_id"] for e in r.json()}.isdisjoint(
        e["event_id"] for e in before["/me/events?limit=500"]
    )
    # Admin routes with a player token.
    r = alice.post(f"/auth/users/{bob.user_id}/ban")
    assert r.status_code == 403, r.text

    assert snapshot(bob) == before


# --- login abuse --------------------------------------------------------------------


def login(client: httpx.Client, name: str, password: str) -> httpx.Response:
    return client.post("/auth/login", json={"user_name": name, "password": password})


def test_unknown_user_and_wrong_password_look_the_same(client: Any, make_player: Any) -> None:
    make_player("known")
    unknown = login(client, "nobody-here", "wrong-password-1")
    wrong = login(client, "known", "wrong-password-1")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.content == wrong.content
    drop = {"date", "content-length"}
    assert {k: v for k, v in unknown.headers.items() if k not in drop} == {
        k: v for k, v in wrong.headers.items() if k not in drop
    }

    def timed(name: str) -> float:
        start = time.perf_counter()
        login(client, name, "wrong-password-2")
        return time.perf_counter() - start

    # Interleaved, and fewer than the per-name limit of failures for each name.
    times: dict[str, list[float]] = {"known": [], "nobody-here": []}
    for _ in range(3):
        for name in times:
            times[name].append(timed(name))
    ratio = statistics.median(times["known"]) / statistics.median(times["nobody-here"])
    assert 0.5 < ratio < 2.0, times  # both pay one argon2 verify


def test_failures_per_name_are_limited_with_retry_after(client: Any, make_player: Any) -> None:
    player = make_player("target")
    limit = 5  # QUESTLINE_LOGIN_MAX_FAILURES_PER_NAME's default, unchanged by the test env
    for _ in range(limit):
        assert login(client, "TARGET", "wrong-password-1").status_code == 401
    r = login(client, "target", player.password)  # even the right password, before hashing
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    assert login(client, "someone-else", "wrong-password-1").status_code == 401


@pytest.fixture
def strict_server(database: str) -> Iterator[Any]:
    """A separate server process that allows 3 failed logins per client."""
    proc = support.start_server(
        "api.main:app",
        name="strict-server",
        QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT="3",
        QUESTLINE_LOGIN_MAX_FAILURES_PER_NAME="100",
    )
    try:
        yield proc
    finally:
        proc.stop()


def test_failures_per_client_are_limited_across_names(strict_server: Any) -> None:
    with httpx.Client(base_url=strict_server.url, timeout=30) as c:
        for i in range(3):
            assert login(c, f"guess{i}", "wrong-password-1").status_code == 401
        r = login(c, "guess-next", "wrong-password-1")
        assert r.status_code == 429, r.text
        assert int(r.headers["Retry-After"]) >= 1


@pytest.mark.parametrize(
    "password",
    ["", "x" * 129, "x" * 10_000, "pässwörd-ünïcödé-🔑", "nul\x00byte-password", "\ud800-lone"],
    ids=["empty", "129-chars", "10k-chars", "unicode", "nul-byte", "lone-surrogate"],
)
def test_odd_passwords_are_refused_cleanly(client: Any, make_player: Any, password: str) -> None:
    make_player("victim")
    body = json.dumps({"user_name": "victim", "password": password}).encode()
    headers = {"Content-Type": "application/json"}
    r = client.post("/auth/login", content=body, headers=headers)
    assert r.status_code in (401, 422), r.text
    signup = json.dumps({"user_name": "newcomer", "password": password}).encode()
    r = client.post("/auth/signup", content=signup, headers=headers)
    if password in ("pässwörd-ünïcödé-🔑", "nul\x00byte-password"):
        # Fine passwords for argon2, which hashes every byte: nothing is cut at the NUL.
        assert r.status_code == 201, r.text
        assert login(client, "newcomer", password).status_code == 200
        if "\x00" in password:
            assert login(client, "newcomer", password.split("\x00")[0]).status_code == 401
    else:
        assert r.status_code == 422, r.text


# --- bodies built to hurt ------------------------------------------------------------


def test_oversized_bodies_are_refused_before_they_are_read(client: Any) -> None:
    huge = b'{"user_name": "' + b"a" * (MAX_BODY_BYTES + 1) + b'", "password": "x"}'
    r = client.post("/auth/login", content=huge, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield b'{"user_name": "'
        for _ in range(MAX_BODY_BYTES // 1024 + 1):
            yield b"a" * 1024
        yield b'", "password": "x"}'

    r = client.post("/auth/signup", content=chunks(), headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("depth", [100, 5_000, 30_000])
def test_deeply_nested_json_is_a_4xx(client: Any, depth: int) -> None:
    nested = "[" * depth + "]" * depth
    body = f'{{"user_name": "deep", "password": {nested}}}'.encode()
    assert len(body) <= MAX_BODY_BYTES
    headers = {"Content-Type": "application/json"}
    for path in ("/auth/login", "/auth/signup", "/auth/refresh"):
        r = client.post(path, content=body, headers=headers)
        # 422 when the parser copes; 400 "error parsing the body" when nesting beats its
        # recursion limit. Either way a clear 4xx, and the server carries on.
        assert r.status_code in (400, 422), (path, r.status_code, r.text[:200])
    assert client.get("/healthz").status_code == 200
