"""API keys over real HTTP: admin-only management, secrets shown once and stored hashed,
revocation at once, scopes."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from models import ApiKey
from questline.infra import db


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
