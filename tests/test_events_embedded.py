"""Gameplay events in the embedded mode (`questline serve`: SQLite, in-process limiter,
embedded broker): a key made by the command, a batch stored, a duplicate recognised, a
quest completed by the worker, the bundle claimed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests import support
from tests.conftest import PASSWORD, Player
from tests.test_embedded import QUESTLINE, Embedded, clean_env


def test_events_are_stored_once_and_applied_in_the_embedded_mode(tmp_path: Path) -> None:
    with Embedded(tmp_path) as app:
        made = subprocess.run(
            [QUESTLINE, "api-key", "create", "local-server", "--scope", "events:write"],
            cwd=tmp_path,
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        key = {"X-API-Key": made.stdout.strip()}
        admin = subprocess.run(
            [QUESTLINE, "create-admin", "boss"],
            cwd=tmp_path,
            env=clean_env(QUESTLINE_ADMIN_PASSWORD=PASSWORD),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert admin.returncode == 0, admin.stderr
        boss = Player.__new__(Player)
        boss.client, boss.name, boss.password = app.client, "boss", PASSWORD
        boss.token = boss.refresh_token = None
        bundle = [{"item": "gold", "qty": 3}, {"item": "chest_epic", "qty": 1}]
        r = boss.post("/rewards", json={"reward_name": "Chest", "items": bundle})
        assert r.status_code == 201, r.text
        quest = {
            "name": "win-5-points",
            "description": "",
            "auto_claim": False,
            "target": 5,
            "reward_id": r.json()["reward_id"],
            "trigger": {"event": "match_won"},
            "measure": "sum",
        }
        r = boss.post("/quests", json=quest)
        assert r.status_code == 201, r.text
        quest_id = r.json()["quest_id"]
        dana = Player(app.client, "dana")
        dana.login()
        r = app.client.patch("/auth/me", json={"timezone": "Asia/Kathmandu"}, headers=dana.headers)
        assert r.status_code == 200, r.text

        def send(*keys: str, value: Any = 2.5) -> list[dict[str, Any]]:
            batch = [
                {"user_id": dana.user_id, "type": "match_won", "value": value, "idempotency_key": k}
                for k in keys
            ]
            r = app.client.post("/events", json={"events": batch}, headers=key)
            assert r.status_code == 202, r.text
            results: list[dict[str, Any]] = r.json()["results"]
            return results

        first = send("m1", "m1", "m2")
        assert [x["status"] for x in first] == ["accepted", "duplicate", "accepted"]
        assert first[0]["event_id"] == first[1]["event_id"]
        assert [x["status"] for x in send("m2", value=9)] == ["duplicate"]
        bad = app.client.post(
            "/events",
            json={"events": [{"user_id": dana.user_id, "type": "sign_in", "idempotency_key": "x"}]},
            headers=key,
        )
        assert bad.status_code == 422, bad.text

        def processed(event_id: int) -> bool:
            body = app.client.get(f"/events/{event_id}", headers=key).json()
            return bool(body["status"] == "processed")

        for x in first:
            support.wait_until(lambda x=x: processed(x["event_id"]), 30, "the events applied")
        history = [e for e in dana.get("/me/events").json() if e["type"] == "match_won"]
        assert sorted(e["data"]["value"] for e in history) == [2.5, 2.5]
        # 2.5 + 2.5 reached the target once: one chest to claim.
        r = dana.post(f"/me/quests/{quest_id}/claim")
        assert r.status_code == 200, r.text
        assert r.json()["balance"] == {"gold": 3, "diamond": 0, "chest_epic": 1}
        assert dana.post(f"/me/quests/{quest_id}/claim").status_code == 409
        assert app.client.get("/me/wallet", headers=dana.headers).json() == {
            "balances": {"gold": 3, "diamond": 0, "chest_epic": 1}
        }
        # An unknown user refuses the whole batch, naming its index; nothing is stored.
        unknown = [
            {"user_id": dana.user_id, "type": "match_won", "idempotency_key": "m3"},
            {"user_id": 10**9, "type": "match_won", "idempotency_key": "m4"},
        ]
        r = app.client.post("/events", json={"events": unknown}, headers=key)
        assert r.status_code == 422, r.text
        assert r.json()["detail"].startswith("events[1].user_id"), r.text
        assert [x["status"] for x in send("m3")] == ["accepted"]
        # A revoked key stops at once, though this process has used it.
        (listed,) = boss.get("/auth/api-keys").json()
        gone = app.client.delete(f"/auth/api-keys/{listed['key_id']}", headers=boss.headers)
        assert gone.status_code == 204, gone.text
        r = app.client.post("/events", json={"events": unknown[:1]}, headers=key)
        assert r.status_code == 401, r.text
