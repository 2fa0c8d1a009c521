"""Webhooks end to end: real API over HTTP, real Celery workers, a real receiver on
loopback; signatures checked with the `standardwebhooks` package, not our own code."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as Verifier

import harness
from harness.receiver import Receiver, Received, always, fail_first
from questline.config import get_settings
from tests import support
from tests.conftest import Player

ALL_TYPES = ["quest.completed", "reward.earned", "reward.claimed"]
BASE = 0.3  # seconds: QUESTLINE_WEBHOOK_RETRY_BASE_SECONDS in these tests


def webhook_env(**overrides: str) -> dict[str, str]:
    env = {
        "QUESTLINE_WEBHOOK_ALLOW_PRIVATE": "true",
        "QUESTLINE_WEBHOOK_RETRY_BASE_SECONDS": str(BASE),
        "QUESTLINE_WEBHOOK_REQUEUE_AFTER_SECONDS": "2",
        "QUESTLINE_WEBHOOK_TIMER_INTERVAL_SECONDS": "0.2",
    }
    env.update(overrides)
    return env


@pytest.fixture
def allow_private(monkeypatch: pytest.MonkeyPatch) -> None:
    """The API in this process accepts receivers on loopback (as the workers will)."""
    monkeypatch.setattr(get_settings(), "webhook_allow_private", True)


@pytest.fixture
def hooks_worker(no_worker: None) -> Iterator[harness.Process]:
    """A worker of these tests' own (events and webhooks, private receivers allowed);
    the suite's worker is stopped so that it takes none of these tasks."""
    with support.start_worker(name="hooks", **webhook_env()) as worker:
        yield worker


def register(admin: Player, url: str, events: list[str] = ALL_TYPES) -> dict[str, Any]:
    r = admin.post("/webhooks", json={"url": url, "events": events})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def deliveries(admin: Player, webhook_id: int, **params: str) -> list[dict[str, Any]]:
    r = admin.get(f"/webhooks/{webhook_id}/deliveries", params=params)
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()
    return rows


def wait_settled(admin: Player, webhook_id: int, count: int, timeout: float = 120) -> list[Any]:
    """Until `count` deliveries exist and none is pending; they are returned."""

    def settled() -> list[dict[str, Any]] | None:
        rows = deliveries(admin, webhook_id)
        if len(rows) == count and all(d["status"] != "pending" for d in rows):
            return rows
        return None

    result: list[dict[str, Any]] = support.wait_until(
        settled, timeout, f"{count} deliveries of webhook {webhook_id} to settle"
    )
    return result


def complete_quest(player: Player) -> None:
    """Three sign-ins: quest 1 completes once and earns its reward (claimed by hand)."""
    for _ in range(3):
        player.wait_processed(player.login()["sign_in_id"])


def verify(secret: str, request: Received) -> dict[str, Any]:
    body: dict[str, Any] = Verifier(secret).verify(request.body, request.headers)
    return body


def test_every_delivery_arrives_signed_after_failures_with_backoff(
    admin: Player, make_player: Any, hooks_worker: Any, allow_private: None
) -> None:
    with Receiver(fail_first(2)) as receiver:
        hook = register(admin, receiver.url)
        assert hook["secret"].startswith("whsec_")
        player = make_player()
        complete_quest(player)
        assert player.post("/me/quests/1/claim").status_code == 200
        rows = wait_settled(admin, hook["webhook_id"], 3)

    assert {d["status"] for d in rows} == {"delivered"}
    assert sorted(d["event_type"] for d in rows) == sorted(ALL_TYPES)
    assert {d["attempts"] for d in rows} == {3}
    assert {d["last_status_code"] for d in rows} == {200}
    by_message = receiver.by_message()
    assert set(by_message) == {d["message_id"] for d in rows}
    for message_id, attempts in by_message.items():
        assert len(attempts) == 3, message_id
        bodies = [verify(hook["secret"], a) for a in attempts]
        assert all(b == bodies[0] for b in bodies)  # the same message every time
        assert bodies[0]["id"] == message_id
        assert set(bodies[0]) == {"id", "type", "created_at", "data"}
        assert bodies[0]["data"]["user_id"] == player.user_id
        assert bodies[0]["data"]["quest_id"] == 1
        # Retry n waits base x 2^(n-1) within -20 %: never sooner (later is the machine).
        for n, (earlier, later) in enumerate(zip(attempts, attempts[1:], strict=False), 1):
            assert later.at - earlier.at >= 0.8 * BASE * 2 ** (n - 1), (message_id, n)
    types = {a[0].json()["type"]: a[0].json()["data"] for a in by_message.values()}
    assert types["quest.completed"]["completions"] == 1
    assert types["reward.earned"]["items"] == [{"item": "diamond", "qty": 10}]
    assert types["reward.claimed"]["user_reward_id"] == types["reward.earned"]["user_reward_id"]
