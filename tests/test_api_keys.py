"""API keys over real HTTP: admin-only management, secrets shown once and stored hashed,
revocation at once, scopes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from models import ApiKey
from questline.infra import db
from tests import factories, support


def _create(admin: Any, name: str = "game-server", scopes: list[str] | None = None) -> Any:
    r = admin.post("/auth/api-keys", json={"name": name, "scopes": scopes or ["events:write"]})
    assert r.status_code == 201, r.text
    return r.json()


def test_an_admin_creates_a_key_whose_secret_is_shown_once_and_stored_hashed(admin: Any) -> None:
    body = _create(admin, scopes=["events:backfill", "events:write"])
    assert set(body) == {"key_id", "name", "scopes", "created_at", "api_key"}
    assert body["scopes"] == ["events:write", "events:backfill"]
    listed = admin.get("/auth/api-keys").json()
    assert [k["key_id"] for k in listed] == [body["key_id"]]
    assert "api_key" not in listed[0]
    with db.transaction() as session:
        stored = session.scalars(select(ApiKey)).one()
        assert body["api_key"] not in (stored.key_hash, stored.name)
        assert len(stored.key_hash) == 64


def test_players_cannot_manage_keys(make_player: Any, admin: Any) -> None:
    player = make_player()
    assert (
        player.post("/auth/api-keys", json={"name": "x", "scopes": ["events:write"]}).status_code
        == 403
    )
    assert player.get("/auth/api-keys").status_code == 403
    key = _create(admin)
    r = player.client.delete(f"/auth/api-keys/{key['key_id']}", headers=player.headers)
    assert r.status_code == 403


def test_bad_key_requests_are_422_and_store_nothing(admin: Any) -> None:
    for body in (
        {"name": "x", "scopes": []},
        {"name": "x", "scopes": ["events:read"]},
        {"name": "", "scopes": ["events:write"]},
        {"name": "x"},
        {"name": "x", "scopes": ["events:write"], "extra": 1},
    ):
        assert admin.post("/auth/api-keys", json=body).status_code == 422, body
    assert admin.get("/auth/api-keys").json() == []


def test_a_revoked_key_disappears_and_a_second_revoke_is_404(
    admin: Any, client: httpx.Client
) -> None:
    key = _create(admin)
    r = client.delete(f"/auth/api-keys/{key['key_id']}", headers=admin.headers)
    assert r.status_code == 204
    assert admin.get("/auth/api-keys").json() == []
    r = client.delete(f"/auth/api-keys/{key['key_id']}", headers=admin.headers)
    assert r.status_code == 404
    r = client.delete("/auth/api-keys/999999", headers=admin.headers)
    assert r.status_code == 404


QUESTLINE = str(Path(sys.executable).with_name("questline"))


def test_the_command_prints_a_working_key_once(client: httpx.Client) -> None:
    def questline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [QUESTLINE, *args], env=support.child_env(), capture_output=True, text=True, timeout=60
        )

    made = questline("api-key", "create", "ranked-server", "--scope", "events:write")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip()
    assert secret.startswith("qlk_")
    assert "ranked-server" in made.stderr
    assert secret not in made.stderr
    with db.transaction() as session:
        user_id = factories.add_user(session).user_id
        stored = session.scalars(select(ApiKey)).one()
        assert (stored.name, stored.scopes) == ("ranked-server", ["events:write"])
    batch = {"events": [{"user_id": user_id, "type": "match_won", "idempotency_key": "m1"}]}
    r = client.post("/events", json=batch, headers={"X-API-Key": secret})
    assert r.status_code == 202, r.text

    for bad in (
        ["api-key", "create", "x", "--scope", "events:read"],
        ["api-key", "create", "x"],
        ["api-key", "create", "   ", "--scope", "events:write"],
    ):
        refused = questline(*bad)
        assert refused.returncode == 2, (bad, refused.stdout, refused.stderr)
        assert refused.stdout == ""
    with db.transaction() as session:
        assert len(session.scalars(select(ApiKey)).all()) == 1
