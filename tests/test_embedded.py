"""`questline serve` as a user runs it: a subprocess in an empty folder, with no
PostgreSQL or Redis in its environment, driven over HTTP; and the operator's
`questline events` / `questline replay` commands on the test database."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

import harness
from harness import pid_alive
from tests import support
from tests.conftest import PASSWORD, Player

QUESTLINE = str(Path(sys.executable).with_name("questline"))


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without any QUESTLINE_ setting: a fresh machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUESTLINE_")}
    return {**env, **overrides}


class Embedded(harness.Process):
    """`questline serve --port N` started in `folder`, its output (and its worker's) in a log."""

    def __init__(self, folder: Path, **env: str) -> None:
        self.folder = folder
        self.port = support.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [QUESTLINE, "serve", "--port", str(self.port)],
            clean_env(**env),
            harness.log_path(folder, "serve"),
            cwd=folder,
        )
        support.wait_until(
            lambda: not self.alive() or ("ready." in self.output() and self.answers()),
            60,
            "questline serve and its worker to be ready",
        )
        assert self.alive(), f"questline serve exited:\n{self.output()}"
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def worker_pids(self) -> list[int]:
        pids: list[int] = []
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            pids += [int(p) for p in (task / "children").read_text().split()]
        return pids

    def event_worker_pid(self) -> int:
        """The worker that applies events (the other one sends webhooks)."""
        for pid in self.worker_pids():
            if b"--queues=sign_ins" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        raise AssertionError("no event worker among serve's children")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
        """Signal serve alone (not its worker) and wait: serve must stop its worker.
        What is left of the group afterwards is killed."""
        self.client.close()
        self.kill(sig)
        try:
            self.wait(timeout)
        finally:
            super().stop(signal.SIGKILL)


# With the sweeper off, a sign-in applied at all was applied by its message (broker
# file -> worker), however long that took.
NO_SWEEPER = {"QUESTLINE_SWEEPER_ENABLED": "false"}


def test_serve_plays_the_whole_story_and_keeps_it_across_a_restart(tmp_path: Path) -> None:
    with Embedded(tmp_path, **NO_SWEEPER) as app:
        out = app.output()
        assert f"Questline is listening on {app.url}" in out
        assert f"{app.url}/docs" in out
        assert app.client.get("/docs").status_code == 200
        checks = app.client.get("/readyz").json()["checks"]
        assert checks == {"database": "ok", "schema": "ok", "broker": "ok"}
        assert app.client.get("/quests").status_code == 401
        data = tmp_path / "questline-data"
        assert {"questline.db", "broker.db", "jwt-private.pem", "jwt-public.pem"} <= {
            p.name for p in data.iterdir()
        }
        assert (data / "jwt-private.pem").stat().st_mode & 0o077 == 0

        alice = Player(app.client, "alice")
        for s in [alice.login(), alice.refresh(), alice.login()]:
            alice.wait_processed(s["sign_in_id"], timeout=60)
        q = alice.quest()
        assert (q["curr_streak"], q["completions"], q["claimable"], q["status"]) == (
            0,
            1,
            1,
            "claimable",
        )
        r = alice.post("/me/quests/1/claim")
        assert r.status_code == 200, r.text
        assert r.json()["balance"] == {"gold": 0, "diamond": 10}

        for s in [alice.refresh(), alice.login(), alice.refresh()]:
            alice.wait_processed(s["sign_in_id"], timeout=60)
        assert alice.quest()["claimable"] == 1
        r = alice.post("/me/quests/1/claim")
        assert r.status_code == 200, r.text
        assert r.json()["balance"] == {"gold": 0, "diamond": 20}

        for s in [alice.login(), alice.refresh(), alice.login()]:
            alice.wait_processed(s["sign_in_id"], timeout=60)
        assert alice.post("/me/quests/1/claim").status_code == 409
        before = alice.quest()
        assert (before["completions"], before["claimed"], before["claimable"]) == (2, 2, 0)
        assert before["status"] == "completed"
        history = alice.get("/me/events", params={"limit": 500}).json()
        old_token, old_refresh = alice.token, alice.refresh_token
        worker_pids = app.worker_pids()
        assert len(worker_pids) == 2  # events, webhooks

    assert app.proc.returncode == 0, app.output()
    assert "Questline stopped." in app.output()
    support.wait_until(lambda: not any(map(pid_alive, worker_pids)), 30, "the worker to exit")

    with Embedded(tmp_path, **NO_SWEEPER) as again:
        alice.client = again.client
        alice.token, alice.refresh_token = old_token, old_refresh
        # Same keys: the token minted before the restart still verifies.
        me = alice.get("/auth/me").json()
        assert (me["diamond"], me["gold"], me["status"]) == (20, 0, "not_new")
        assert alice.quest() == before
        assert alice.get("/me/events", params={"limit": 500}).json() == history
        alice.wait_processed(alice.refresh()["sign_in_id"], timeout=60)
        assert alice.quest()["completions"] == 2
        assert alice.get("/auth/me").json()["diamond"] == 20

        # serve killed outright: its worker must not outlive it.
        worker_pids = again.worker_pids()
        again.stop(signal.SIGKILL)
        assert again.proc.returncode == -signal.SIGKILL
        support.wait_until(lambda: not any(map(pid_alive, worker_pids)), 30, "orphan to exit")


def test_concurrent_sign_ins_of_one_player_are_all_counted(tmp_path: Path) -> None:
    with Embedded(tmp_path) as app:
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
        boss.login()
        r = boss.post(
            "/rewards", json={"reward_name": "One Gold", "reward_item": "gold", "reward_qty": 1}
        )
        assert r.status_code == 201, r.text
        # Every sign-in completes this quest and credits 1 gold at once: the wallet
        # counts the sign-ins the worker applied, so a lost update shows.
        r = boss.post(
            "/quests",
            json={
                "name": "every-sign-in",
                "description": "one gold per sign-in",
                "auto_claim": True,
                "streak": 1,
                "duplication": 1000,
                "reward_id": r.json()["reward_id"],
            },
        )
        assert r.status_code == 201, r.text
        quest_id = r.json()["quest_id"]

        bob = Player(app.client, "bob")
        creds = {"user_name": "bob", "password": PASSWORD}
        with ThreadPoolExecutor(20) as pool:
            logins = list(pool.map(lambda _: app.client.post("/auth/login", json=creds), range(20)))
            assert [r.status_code for r in logins] == [200] * 20, [r.text for r in logins]
            refreshes = list(
                pool.map(
                    lambda r: app.client.post(
                        "/auth/refresh", json={"refresh_token": r.json()["refresh_token"]}
                    ),
                    logins,
                )
            )
        assert [r.status_code for r in refreshes] == [200] * 20, [r.text for r in refreshes]
        sign_in_ids = {r.json()["sign_in_id"] for r in logins + refreshes}
        assert len(sign_in_ids) == 40

        bob.token = refreshes[0].json()["access_token"]
        support.wait_until(
            lambda: bob.quest(quest_id)["completions"] == 40, 60, "40 sign-ins to be applied"
        )
        assert bob.get("/auth/me").json()["gold"] == 40
        seed = bob.quest(1)
        assert (seed["completions"], seed["claimable"], seed["curr_streak"]) == (2, 2, 0)
        events = bob.get("/me/events", params={"limit": 500}).json()
        assert sorted(e["event_id"] for e in events if e["type"] == "sign_in") == sorted(
            sign_in_ids
        )
        assert all(bob.get(f"/sign-ins/{i}").json()["status"] == "processed" for i in sign_in_ids)


def test_sign_ins_left_by_a_crash_are_applied_after_the_next_start(tmp_path: Path) -> None:
    fast_sweeper = {"QUESTLINE_SWEEP_AFTER_SECONDS": "1", "QUESTLINE_SWEEP_INTERVAL_SECONDS": "0.5"}
    app = Embedded(tmp_path, **fast_sweeper)
    carol = Player(app.client, "carol")
    carol.wait_processed(carol.login()["sign_in_id"], timeout=60)
    worker = app.event_worker_pid()
    os.kill(worker, signal.SIGSTOP)  # the worker hangs...
    stranded = carol.refresh()["sign_in_id"]  # ...a sign-in is stored...
    app.stop(signal.SIGKILL)  # ...and the machine dies.
    os.kill(worker, signal.SIGKILL)
    support.wait_until(lambda: not pid_alive(worker), 30, "the stopped worker to die")

    pending = subprocess.run(
        [QUESTLINE, "events", "--pending", "--json"],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert pending.returncode == 0, pending.stderr
    assert [(e["sign_in_id"], e["state"]) for e in json.loads(pending.stdout)] == [
        (stranded, "pending")
    ]
    # Its message is lost too, so only the outbox sweeper can apply it.
    with sqlite3.connect(tmp_path / "questline-data" / "broker.db") as broker:
        broker.execute("DELETE FROM kombu_message")

    with Embedded(tmp_path, **fast_sweeper) as again:
        carol.client = again.client
        carol.wait_processed(stranded, timeout=60)
        q = carol.quest()
        assert (q["curr_streak"], q["completions"]) == (2, 0)
        # The sweeper logs after its whole pass, a moment after the commit seen above.
        support.wait_until(
            lambda: "sweeper applied 1 stale inputs" in again.output(),
            30,
            "the sweeper to report the sign-in it applied",
        )


def test_events_and_replay_commands_on_the_test_database(worker: Any) -> None:
    """`questline events --pending` lists a dead-lettered sign-in; `replay` revives it
    and a real worker applies it."""
    from models import Event
    from models.base import utcnow
    from questline.infra import db
    from questline.quests import repository
    from questline.users import service as users

    with db.transaction() as s:
        users.signup(s, user_name="dora", password=PASSWORD)
    with db.transaction() as s:
        # A stored sign-in whose message was never sent: the service, not the route.
        sign_in = users.login(s, user_name="dora", password=PASSWORD, client="test")
        repository.record_failure(
            s, [sign_in.sign_in_id], error="RuntimeError: poison", max_attempts=1, now=utcnow()
        )

    def questline(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [QUESTLINE, *args], env=support.child_env(), capture_output=True, text=True, timeout=60
        )

    listed = questline("events", "--pending")
    assert listed.returncode == 0, listed.stderr
    assert "pending: 0  dead: 1" in listed.stdout
    line = next(x for x in listed.stdout.splitlines() if x.split()[0] == str(sign_in.sign_in_id))
    assert "dead" in line
    assert "RuntimeError: poison" in line

    replayed = questline("replay", str(sign_in.sign_in_id))
    assert replayed.returncode == 0, replayed.stderr
    assert f"sign-in {sign_in.sign_in_id} re-enqueued" in replayed.stdout

    def processed() -> bool:
        with db.transaction() as s:
            return s.get(Event, sign_in.sign_in_id).processed_at is not None  # type: ignore[union-attr]

    support.wait_until(processed, 60, "the replayed sign-in to be applied")
    after = questline("events", "--pending", "--json")
    assert json.loads(after.stdout) == []
    again = questline("replay", str(sign_in.sign_in_id))
    assert again.returncode == 1
    assert "not an unprocessed sign-in" in again.stderr
    assert questline("replay", "not-a-number").returncode == 2
