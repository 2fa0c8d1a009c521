"""Workers under real conditions: a real Celery worker on the broker, real HTTP,
threads racing, the broker away at login, a worker killed under a message, a poison
sign-in and the operator commands.

The tests of the worker path take the `broker` fixture and run on both brokers:
Redis, and RabbitMQ (QUESTLINE_BROKER_URL, quorum queues) on the run's own vhost."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text

from models import Event, EventType
from questline.catalog import cache
from questline.commands import cli
from questline.config import get_settings
from questline.infra import db
from questline.quests.rules import apply_inputs
from questline.wallet.repository import balances
from tests import factories as f
from tests import support
from workers.tasks import process_sign_in

pytestmark = pytest.mark.usefixtures("worker")


def processed_sign_ins(user_id: int) -> int:
    with db.transaction() as session:
        return int(
            session.scalar(
                select(func.count()).where(
                    Event.user_id == user_id,
                    Event.type == EventType.SIGN_IN,
                    Event.processed_at.is_not(None),
                )
            )
            or 0
        )


def quest_events_per_quest(user_id: int) -> dict[int, int]:
    with db.transaction() as session:
        rows = session.execute(
            select(Event.quest_id, func.count())
            .where(Event.user_id == user_id, Event.type == EventType.QUEST_PROGRESS)
            .group_by(Event.quest_id)
        ).all()
    return {int(q): int(n) for q, n in rows}


def test_a_sign_in_delivered_five_times_is_applied_once(
    broker: support.Broker, broker_worker: support.Process
) -> None:
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        [sign_in_id] = f.add_sign_ins(session, user_id)
    task_ids = [str(uuid.uuid4()) for _ in range(5)]
    for task_id in task_ids:
        broker.send(
            "questline.process_sign_in", sign_in_id, kwargs={"user_id": user_id}, task_id=task_id
        )

    def outcomes() -> list[str] | None:
        lines = [
            line
            for line in broker_worker.output().splitlines()
            if "succeeded" in line and any(t in line for t in task_ids)
        ]
        return lines if len(lines) == len(task_ids) else None

    lines = support.wait_until(outcomes, 60, "the five deliveries to be handled")
    applied = [line for line in lines if "'outcome': 'applied'" in line]
    repeated = [line for line in lines if "'outcome': 'already processed'" in line]
    # The sweeper may have taken it first (then no delivery applied it); never twice.
    assert len(applied) <= 1
    assert len(applied) + len(repeated) == 5
    with db.transaction() as session:
        assert f.progress(session, user_id, 1) == (1, 0)
    assert quest_events_per_quest(user_id) == {1: 1}


def test_twenty_concurrent_sign_ins_of_one_player_all_count(
    broker_api: str, broker_worker: support.Process
) -> None:
    with db.transaction() as session:
        user_id = f.add_user(session, "racer").user_id
        slow = f.add_quest(session, streak=7, duplication=100).quest_id
        every = f.add_quest(session, streak=1, duplication=1000, auto_claim=True, qty=1).quest_id
    cache.invalidate()
    seen = len(broker_worker.output())

    def sign_in(_i: int) -> int:
        with httpx.Client(base_url=broker_api, timeout=60) as c:
            r = c.post("/auth/login", json={"user_name": "racer", "password": f.PASSWORD})
            assert r.status_code == 200, r.text
            return int(r.json()["sign_in_id"])

    with ThreadPoolExecutor(20) as pool:
        sign_in_ids = list(pool.map(sign_in, range(20)))
    assert len(set(sign_in_ids)) == 20

    support.wait_until(lambda: processed_sign_ins(user_id) == 20, 60, "20 processed sign-ins")
    # The wake-ups went through this broker: its worker ran drains that applied sign-ins.
    assert "questline.drain_outbox" in broker_worker.output()[seen:]
    with db.transaction() as session:
        assert f.progress(session, user_id, slow) == (20 - 14, 2)
        assert f.progress(session, user_id, every) == (0, 20)
        assert f.progress(session, user_id, 1) == (0, 2)  # capped after 6
        assert balances(session, user_id) == {"gold": 20, "diamond": 0}
        assert len(f.rewards(session, user_id, every)) == 20
    assert quest_events_per_quest(user_id) == {1: 6, slow: 20, every: 20}


def waiting_on_a_lock() -> int:
    """Sessions of the test database waiting for a lock right now."""
    with db.get_engine().connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database()"
                )
            ).scalar_one()
        )


@pytest.mark.parametrize(
    ("broker", "killed"),
    [
        ("redis", "pool child"),
        ("rabbitmq", "pool child"),
        # Only RabbitMQ delivers a message again as soon as the worker process holding it
        # dies; Redis waits out the visibility timeout (>= 45 s; the sweeper is faster).
        ("rabbitmq", "main process"),
    ],
    indirect=["broker"],
)
def test_a_message_held_by_a_killed_worker_is_delivered_again_and_applied_once(
    broker: support.Broker, killed: str
) -> None:
    """The task is inside its transaction, waiting for the sign-in's row lock that this
    test holds, when the worker is SIGKILLed: its pool child (the main process puts the
    message back, task_reject_on_worker_lost) or its main process with the pool (a host
    crash: the broker sees the connection close). No sweeper can apply the sign-in (it
    is dated an hour ahead): only the message delivered again can."""
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        [sign_in_id] = f.add_sign_ins(session, user_id)
        f.keep_from_sweeper(session, [sign_in_id])
    env = {**broker.env, "QUESTLINE_SWEEPER_ENABLED": "false"}
    holder = db.get_engine().connect()
    lock = holder.begin()
    holder.execute(text("SELECT 1 FROM events WHERE event_id = :e FOR UPDATE"), {"e": sign_in_id})
    first = support.start_worker(concurrency=1, name="doomed", queues="kill-test", **env)
    second: support.Process | None = None
    try:
        broker.send("questline.process_sign_in", sign_in_id, queue="kill-test")
        support.wait_until(lambda: waiting_on_a_lock() == 1, 60, "the task to wait for the lock")
        [child] = support.children_of(first.pid)
        if killed == "pool child":
            support.send_signal(child)
            survivor = first
        else:
            first.kill(9)
            support.send_signal(child)
            first.wait(30)
            second = survivor = support.start_worker(
                concurrency=1, name="heir", queues="kill-test", **env
            )
        lock.rollback()  # the sign-in is free: whoever holds the message applies it
        support.wait_until(
            lambda: processed_sign_ins(user_id) == 1, 60, "the message delivered again"
        )
        support.wait_until(
            lambda: "'outcome': 'applied'" in survivor.output(), 30, "the survivor's log line"
        )
    finally:
        holder.close()
        first.stop()
        if second is not None:
            second.stop()
    with db.transaction() as session:
        assert f.progress(session, user_id, 1) == (1, 0)
    assert quest_events_per_quest(user_id) == {1: 1}


def test_concurrent_claims_never_credit_more_than_was_earned(client: httpx.Client) -> None:
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        quest_id = f.add_quest(session, streak=1, duplication=5, item="gold", qty=7).quest_id
        apply_inputs(session, event_ids=f.add_sign_ins(session, user_id, 5))
    cache.invalidate()
    headers = f.bearer(user_id)

    def claim(key: str | None) -> tuple[int, Any]:
        extra = {"Idempotency-Key": key} if key else {}
        with httpx.Client(base_url=client.base_url, timeout=60) as c:
            r = c.post(f"/me/quests/{quest_id}/claim", headers={**headers, **extra})
            return r.status_code, r.json()

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(claim, [None] * 20))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * 5 + [409] * 15
    assert sorted(body["claimable"] for status, body in answers if status == 200) == [0, 1, 2, 3, 4]
    with db.transaction() as session:
        assert balances(session, user_id)["gold"] == 5 * 7
        assert [r.status for r in f.rewards(session, user_id, quest_id)] == ["claimed"] * 5
        assert len(f.events(session, user_id, EventType.REWARD_CLAIMED)) == 5

    # One Idempotency-Key from many threads: one claim at most, one answer for all.
    with db.transaction() as session:
        session.execute(
            text("UPDATE quests SET duplication = 7 WHERE quest_id = :q"), {"q": quest_id}
        )
        f.catalog_changed(session)
        apply_inputs(session, event_ids=f.add_sign_ins(session, user_id, 2))
    cache.invalidate()
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(claim, ["same-key"] * 10))
    assert {json.dumps(a, sort_keys=True) for a in answers} == {
        json.dumps(answers[0], sort_keys=True)
    }
    assert answers[0][0] == 200
    assert answers[0][1]["claimable"] == 1
    with db.transaction() as session:
        assert balances(session, user_id)["gold"] == 6 * 7


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def server_without_broker(
    database: str, request: pytest.FixtureRequest
) -> Iterator[support.Process]:
    """The all-in-one app in its own process, its broker URL pointing at a closed port:
    Redis (broker and cache at once), or RabbitMQ (Redis still answers as the cache)."""
    port = support.free_port()
    if request.param == "redis":
        env = {"QUESTLINE_REDIS_URL": f"redis://127.0.0.1:{port}/0"}
    else:
        env = {"QUESTLINE_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{port}//"}
    proc = support.start_server("api.main:app", name=f"no-{request.param}", **env)
    yield proc
    proc.stop()


def test_a_login_while_the_broker_is_down_is_answered_and_applied_later(
    server_without_broker: support.Process,
) -> None:
    with db.transaction() as session:
        user_id = f.add_user(session, "offline").user_id
    url: str = server_without_broker.url  # type: ignore[attr-defined]
    with httpx.Client(base_url=url, timeout=30) as c:

        def timed(name: str) -> tuple[httpx.Response, float]:
            started = time.perf_counter()
            r = c.post("/auth/login", json={"user_name": name, "password": f.PASSWORD})
            return r, time.perf_counter() - started

        # A good login and a refused one both pay one argon2 verify; only the good one
        # stores a sign-in and tries to publish it. Timed side by side, so a slow or busy
        # machine slows both alike: a publish that waited for the broker would show.
        good: list[float] = []
        refused: list[float] = []
        for _ in range(3):
            r, seconds = timed("offline")
            assert r.status_code == 200, r.text
            good.append(seconds)
            wrong, seconds = timed("nobody-here")
            assert wrong.status_code == 401, wrong.text
            refused.append(seconds)
        ratio = statistics.median(good) / statistics.median(refused)
        assert ratio < 3, f"logins took {good} s with the broker down, refused ones {refused} s"
        headers = {"Authorization": f"Bearer {r.json()['access_token']}"}

        # No message reached a worker; the suite worker's sweeper applies the sign-ins.
        support.wait_until(
            lambda: processed_sign_ins(user_id) == 3, 60, "the sweeper to apply the sign-ins"
        )
        quest = c.get("/me/quests", headers=headers).json()[0]
        assert (quest["curr_streak"], quest["completions"]) == (0, 1)


def test_readiness_names_the_broker_when_it_is_down(
    server_without_broker: support.Process,
) -> None:
    url: str = server_without_broker.url  # type: ignore[attr-defined]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    r = httpx.get(f"{url}/readyz", timeout=10)
    assert r.status_code == 503
    body = r.json()
    assert body["failed"] == ["broker"]
    assert body["checks"]["database"] == "ok"
    assert body["checks"]["broker"] != "ok"


def questline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "questline.commands.cli", *args],
        env=support.child_env(),
        cwd=support.ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_poison_sign_in_goes_dead_and_is_replayed_by_an_operator(
    capsys: pytest.CaptureFixture[str],
) -> None:
    max_attempts = get_settings().max_attempts
    with db.transaction() as session:
        # A wallet one credit away from BIGINT overflow: granting this auto-claim
        # reward fails inside the rule's transaction, every time.
        poisoned = f.add_user(session).user_id
        f.set_balance(session, poisoned, "diamond", 2**63 - 5)
        healthy = f.add_user(session).user_id
        f.add_quest(session, streak=1, duplication=5, auto_claim=True, item="diamond", qty=10)
        [poison] = f.add_sign_ins(session, poisoned)
        f.add_sign_ins(session, healthy)

    def state() -> Event | None:
        with db.transaction() as session:
            event = session.get(Event, poison)
            return event if event is not None and event.dead_at is not None else None

    dead = support.wait_until(state, 120, "the poison sign-in to go dead", interval=0.2)
    assert dead.attempts == max_attempts
    assert dead.processed_at is None
    assert "out of range" in (dead.last_error or "")
    assert processed_sign_ins(healthy) == 1  # the poison did not hold anyone else up

    summary = questline("events")
    assert summary.returncode == 0, summary.stderr
    assert "pending: 0  dead: 1" in summary.stdout
    [row] = [
        line.split()
        for line in summary.stdout.splitlines()
        if line.strip().startswith(f"{poison} ")
    ]
    assert row[:6] == [str(poison), "user", str(poisoned), "dead", "attempts", str(max_attempts)]
    assert "out of range" in summary.stdout
    # The other commands run in-process: a new interpreter costs seconds on a busy CI box.
    capsys.readouterr()
    assert cli.main(["events", "--json"]) == 0
    [listed] = json.loads(capsys.readouterr().out)
    assert (listed["sign_in_id"], listed["state"], listed["attempts"]) == (
        poison,
        "dead",
        max_attempts,
    )

    with db.transaction() as session:  # the operator fixes the cause ...
        f.set_balance(session, poisoned, "diamond", 0)
    assert cli.main(["replay", str(poison)]) == 0  # ... and replays the sign-in
    assert "re-enqueued" in capsys.readouterr().out

    support.wait_until(lambda: processed_sign_ins(poisoned) == 1, 60, "the replayed sign-in")
    with db.transaction() as session:
        assert balances(session, poisoned)["diamond"] == 10
    assert cli.main(["events", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert cli.main(["replay", str(poison)]) == 1
    assert "not an unprocessed sign-in" in capsys.readouterr().err


def test_a_worker_serves_metrics_from_all_its_pool_processes() -> None:
    """QUESTLINE_WORKER_METRICS_PORT: sign-ins applied and their lag, summed over the
    prefork children, in Prometheus text from the worker's main process."""
    port = support.free_port()
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        sign_in_ids = f.add_sign_ins(session, user_id, 3)
        f.keep_from_sweeper(session, sign_in_ids)  # only our messages apply them
    with support.worker_running(
        name="metrics", queues="metrics-test", QUESTLINE_WORKER_METRICS_PORT=str(port)
    ):
        for sign_in_id in sign_in_ids:
            process_sign_in.apply_async((sign_in_id,), queue="metrics-test")

        def scraped() -> dict[str, float] | None:
            try:
                text_ = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return None
            values = {
                line.split()[0]: float(line.split()[1])
                for line in text_.splitlines()
                if line.startswith(("questline_sign_ins_processed_total", "questline_sign_in_lag"))
            }
            done = values.get("questline_sign_ins_processed_total", 0) == 3
            return values if done else None

        values = support.wait_until(scraped, 60, "the worker's metrics to count 3 sign-ins")
    assert values["questline_sign_in_lag_seconds_count"] == 3
    with db.transaction() as session:
        assert f.progress(session, user_id, 1) == (0, 1)
