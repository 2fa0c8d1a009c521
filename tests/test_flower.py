"""Flower (`celery -A workers flower`) on the test broker, protected with basic auth
as in docker-compose.yml, shows the worker and the sign-in tasks it processed."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests import support
from tests.conftest import PASSWORD

CREDENTIALS = ("ops", "flower-s3cret")


@pytest.fixture
def flower() -> Iterator[str]:
    port = support.free_port()
    proc = support.Process(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "flower",
            f"--port={port}",
            "--address=127.0.0.1",
        ],
        support.child_env(FLOWER_BASIC_AUTH=":".join(CREDENTIALS)),
        "flower",
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if not proc.alive():
            return True
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        support.wait_until(ready, 30, "Flower to answer")
        assert proc.alive(), f"flower exited:\n{proc.output()}"
        yield url
    finally:
        proc.stop()


def test_flower_shows_the_worker_and_its_sign_in_tasks(flower: str, worker: Any) -> None:
    # Sign-ins one message each (the per-event dispatch), so each is one task in Flower.
    server = support.start_server("api.main:app", QUESTLINE_SIGN_IN_DISPATCH="per_event")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as app:  # type: ignore[attr-defined]
            r = app.post("/auth/signup", json={"user_name": "fern", "password": PASSWORD})
            assert r.status_code == 201, r.text
            user_id = r.json()["user_id"]
            login = app.post("/auth/login", json={"user_name": "fern", "password": PASSWORD})
            assert login.status_code == 200, login.text
            sign_in_id = login.json()["sign_in_id"]
    finally:
        server.stop()

    with httpx.Client(base_url=flower, timeout=30) as ops:
        for path in ("/api/workers", "/api/tasks", "/"):
            assert ops.get(path).status_code == 401, path
        assert ops.get("/api/tasks", auth=("ops", "wrong")).status_code == 401
        ops.auth = CREDENTIALS

        def worker_listed() -> bool:
            workers = ops.get("/api/workers", params={"refresh": "1"}).json()
            return any(name.startswith("suite-") for name in workers)

        support.wait_until(worker_listed, 30, "Flower to list the worker", interval=0.5)

        def processed_task() -> dict[str, Any] | None:
            tasks = ops.get("/api/tasks", params={"taskname": "questline.process_sign_in"}).json()
            return next(
                (
                    t
                    for t in tasks.values()
                    if t["state"] == "SUCCESS"
                    and t["args"] in (f"[{sign_in_id}]", f"({sign_in_id},)")
                ),
                None,
            )

        task = support.wait_until(processed_task, 30, "Flower to show the processed sign-in")
        assert task["name"] == "questline.process_sign_in"
        assert task["worker"].startswith("suite-")
        assert f"'user_id': {user_id}" in task["kwargs"]
        assert f"'event_id': {sign_in_id}" in task["result"]
        assert "'outcome': 'applied'" in task["result"]

        shown = json.dumps(ops.get("/api/tasks").json())
        body = login.json()
        for secret in (PASSWORD, body["access_token"], body["refresh_token"]):
            assert secret not in shown


def test_flower_shows_webhook_deliveries_with_their_ids_and_outcome(
    flower: str, admin: Any, make_player: Any, no_worker: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.receiver import Receiver
    from questline.config import get_settings

    monkeypatch.setattr(get_settings(), "webhook_allow_private", True)
    env = {"QUESTLINE_WEBHOOK_ALLOW_PRIVATE": "true"}
    with Receiver() as receiver, support.start_worker(name="hooks-flower", **env):
        r = admin.post("/webhooks", json={"url": receiver.url, "events": ["quest.completed"]})
        assert r.status_code == 201, r.text
        webhook = r.json()
        player = make_player()
        for _ in range(3):
            player.wait_processed(player.login()["sign_in_id"])

        with httpx.Client(base_url=flower, timeout=30, auth=CREDENTIALS) as ops:

            def delivered_task() -> dict[str, Any] | None:
                tasks = ops.get(
                    "/api/tasks", params={"taskname": "questline.deliver_webhook"}
                ).json()
                return next((t for t in tasks.values() if t["state"] == "SUCCESS"), None)

            task = support.wait_until(delivered_task, 60, "Flower to show the delivery task")
            shown = json.dumps(ops.get("/api/tasks").json())
    delivery_id = webhook_deliveries(admin, webhook["webhook_id"])[0]["delivery_id"]
    assert task["args"] in (f"[{delivery_id}]", f"({delivery_id},)")
    assert f"'webhook_id': {webhook['webhook_id']}" in task["kwargs"]
    assert "'outcome': 'delivered'" in task["result"]
    assert f"'delivery_id': {delivery_id}" in task["result"]
    assert "'status_code': 200" in task["result"]
    assert webhook["secret"] not in shown


def webhook_deliveries(admin: Any, webhook_id: int) -> list[dict[str, Any]]:
    r = admin.get(f"/webhooks/{webhook_id}/deliveries")
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows
