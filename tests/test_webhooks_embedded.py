"""Webhooks in the embedded mode (`questline serve`: SQLite, the embedded broker, a worker
of its own for the webhooks queue): a receiver that fails once gets every occurrence,
signed, and a receiver that hangs holds up no sign-in."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

from standardwebhooks.webhooks import Webhook as Verifier

from harness.receiver import Received, Receiver, fail_first
from tests import support
from tests.conftest import PASSWORD, Player
from tests.test_embedded import QUESTLINE, Embedded, clean_env

FAST = {
    "QUESTLINE_WEBHOOK_ALLOW_PRIVATE": "true",
    "QUESTLINE_WEBHOOK_RETRY_BASE_SECONDS": "0.3",
    "QUESTLINE_WEBHOOK_TIMEOUT_SECONDS": "60",
}


def test_webhooks_are_delivered_in_the_embedded_mode(tmp_path: Path) -> None:
    release = threading.Event()
    answered = threading.Event()

    def hang(_request: Received) -> int:
        release.wait(120)
        answered.set()
        return 200

    with (
        Receiver(fail_first(1)) as receiver,
        Receiver(hang) as stuck,
        Embedded(tmp_path, **FAST) as app,
    ):
        made = subprocess.run(
            [QUESTLINE, "create-admin", "boss"],
            cwd=tmp_path,
            env=clean_env(QUESTLINE_ADMIN_PASSWORD=PASSWORD),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        boss = Player.__new__(Player)
        boss.client, boss.name, boss.password = app.client, "boss", PASSWORD
        boss.token = boss.refresh_token = None
        r = boss.post("/webhooks", json={"url": stuck.url, "events": ["quest.completed"]})
        assert r.status_code == 201, r.text
        r = boss.post(
            "/webhooks",
            json={"url": receiver.url, "events": ["quest.completed", "reward.claimed"]},
        )
        assert r.status_code == 201, r.text
        hook = r.json()

        erin = Player(app.client, "erin")
        try:
            for _ in range(3):
                erin.wait_processed(erin.login()["sign_in_id"])
            assert erin.post("/me/quests/1/claim").status_code == 200
            support.wait_until(stuck.requests, 60, "the stuck receiver's request")
            # Sign-ins go on while the webhook worker waits on the stuck receiver.
            erin.wait_processed(erin.login()["sign_in_id"])

            def delivered() -> list[dict[str, object]] | None:
                rows: list[dict[str, object]] = boss.get(
                    f"/webhooks/{hook['webhook_id']}/deliveries", params={"status": "delivered"}
                ).json()
                return rows if len(rows) == 2 else None

            rows = support.wait_until(delivered, 90, "both deliveries to be delivered")
            # ...and so do the other receiver's deliveries (the webhook worker has threads).
            assert not answered.is_set()
        finally:
            release.set()
    assert {(d["event_type"], d["attempts"]) for d in rows} == {
        ("quest.completed", 2),
        ("reward.claimed", 2),
    }
    for attempts in receiver.by_message().values():
        assert len(attempts) == 2
        for a in attempts:
            assert Verifier(hook["secret"]).verify(a.body, a.headers)["data"]["user_id"] == (
                erin.user_id
            )
