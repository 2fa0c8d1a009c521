"""Webhooks end to end: real API over HTTP, real Celery workers, a real receiver on
loopback; signatures checked with the `standardwebhooks` package, not our own code."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from standardwebhooks.webhooks import Webhook as Verifier

import harness
from harness.receiver import Received, Receiver, always, fail_first
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
    """A worker of these tests' own (events and webhooks, private receivers allowed,
    metrics served on worker.metrics_port); the suite's worker is stopped so that it
    takes none of these tasks."""
    port = support.free_port()
    env = webhook_env(QUESTLINE_WORKER_METRICS_PORT=str(port))
    with support.start_worker(name="hooks", **env) as worker:
        worker.metrics_port = port  # type: ignore[attr-defined]
        yield worker


def metric(worker: Any, name: str) -> float:
    """A worker metric's value (0 when not yet exported)."""
    text = httpx.get(f"http://127.0.0.1:{worker.metrics_port}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


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
    # The worker's /metrics: attempts by outcome, and their latency.
    delivered = 'questline_webhook_deliveries_total{outcome="delivered"}'
    support.wait_until(lambda: metric(hooks_worker, delivered) == 3, 30, "3 delivered counted")
    assert metric(hooks_worker, 'questline_webhook_deliveries_total{outcome="retry"}') == 6
    assert metric(hooks_worker, 'questline_webhook_delivery_seconds_count{outcome="retry"}') == 6
    types = {a[0].json()["type"]: a[0].json()["data"] for a in by_message.values()}
    assert types["quest.completed"]["completions"] == 1
    assert types["reward.earned"]["items"] == [{"item": "diamond", "qty": 10}]
    assert types["reward.claimed"]["user_reward_id"] == types["reward.earned"]["user_reward_id"]


def test_admin_routes_and_bad_input(admin: Player, make_player: Any) -> None:
    """No private receivers here (the default): what is refused changes nothing."""
    player = make_player()
    assert player.post("/webhooks", json={"url": "https://93.184.215.14/"}).status_code == 403
    assert admin.client.get("/webhooks").status_code == 401
    for url in [
        "ftp://93.184.215.14/",
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://10.0.0.8/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]/",
        "http://0.0.0.0/",
        "http://224.0.0.1/",
        "http://[::ffff:127.0.0.1]/",
        "not a url",
    ]:
        r = admin.post("/webhooks", json={"url": url, "events": ["reward.earned"]})
        assert r.status_code == 422, (url, r.text)
    for body in [
        {"url": "https://93.184.215.14/", "events": []},
        {"url": "https://93.184.215.14/", "events": ["quest.started"]},
        {"url": "https://93.184.215.14/"},
        {"url": "https://93.184.215.14/", "events": ["reward.earned"], "secret": "x"},
        {"url": 5, "events": ["reward.earned"]},
    ]:
        assert admin.post("/webhooks", json=body).status_code == 422, body
    assert admin.get("/webhooks").json() == []

    hook = register(admin, "https://93.184.215.14/in", ["reward.earned", "quest.completed"])
    assert hook["events"] == ["quest.completed", "reward.earned"]
    listed = admin.get("/webhooks").json()
    assert listed == [{k: v for k, v in hook.items() if k != "secret"}]
    wid = hook["webhook_id"]
    assert deliveries(admin, wid) == []
    assert admin.get(f"/webhooks/{wid}/deliveries", params={"status": "lost"}).status_code == 422
    assert admin.get(f"/webhooks/{wid + 1}/deliveries").status_code == 404
    assert admin.post(f"/webhooks/{wid}/deliveries/1/retry").status_code == 404
    assert admin.post(f"/webhooks/{wid}/deliveries/0/retry").status_code == 422
    assert player.client.delete(f"/webhooks/{wid}", headers=player.headers).status_code == 403
    assert admin.client.delete(f"/webhooks/{wid}", headers=admin.headers).status_code == 204
    assert admin.client.delete(f"/webhooks/{wid}", headers=admin.headers).status_code == 404
    assert admin.get("/webhooks").json() == []
    assert admin.get(f"/webhooks/{wid}/deliveries").status_code == 404


def test_a_receiver_that_hangs_past_the_timeout_gets_the_message_again(
    admin: Player, make_player: Any, hooks_worker: Any, allow_private: None
) -> None:
    """The default 5 s timeout: the first attempt hangs past it, the second is answered."""
    release = threading.Event()

    def hang_first(request: Received) -> int:
        if request.number == 1:
            release.wait(60)
        return 200

    with Receiver(hang_first) as receiver:
        hook = register(admin, receiver.url, ["quest.completed"])
        complete_quest(make_player())
        try:
            (row,) = wait_settled(admin, hook["webhook_id"], 1)
        finally:
            release.set()
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    (attempts,) = receiver.by_message().values()
    assert [a.message_id for a in attempts] == [row["message_id"]] * 2
    # Attempt 1 ended at its 5 s deadline (which starts before the request reaches the
    # receiver), and retry 1 waited base x 2^0 (-20 %) after it.
    line = f"delivery {row['delivery_id']} attempt 1: retry (no answer within 5 s)"
    assert line in hooks_worker.output()
    assert attempts[1].at - attempts[0].at >= 0.8 * BASE
    for a in attempts:
        verify(hook["secret"], a)


def test_a_hanging_receiver_delays_neither_other_receivers_nor_events(
    admin: Player, make_player: Any, no_worker: None, allow_private: None
) -> None:
    """A webhook worker of 2 slots, at most 1 attempt per endpoint: while one receiver
    holds its attempt, the other's deliveries and every sign-in go through."""
    release = threading.Event()

    def hang(_request: Received) -> int:
        release.wait(120)
        return 200

    env = webhook_env(
        QUESTLINE_WEBHOOK_TIMEOUT_SECONDS="60", QUESTLINE_WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT="1"
    )
    with (
        Receiver(hang) as stuck,
        Receiver(always(204)) as healthy,
        support.start_worker(name="hooks-events", queues="sign_ins,questline", **env),
        support.start_worker(name="hooks-send", queues="webhooks", concurrency=2, **env),
    ):
        stuck_hook = register(admin, stuck.url, ["quest.completed", "reward.earned"])
        healthy_hook = register(admin, healthy.url, ["quest.completed", "reward.earned"])
        try:
            complete_quest(make_player())
            support.wait_until(lambda: stuck.requests(), 60, "the stuck receiver's first request")
            wait_settled(admin, healthy_hook["webhook_id"], 2)
            later = make_player()
            complete_quest(later)  # sign-ins are applied while the receiver hangs
            rows = wait_settled(admin, healthy_hook["webhook_id"], 4)
            assert {d["status"] for d in rows} == {"delivered"}
            assert len(stuck.requests()) == 1  # one slot, still held
            assert not release.is_set()
        finally:
            release.set()
        wait_settled(admin, stuck_hook["webhook_id"], 4)
    assert {d["status"] for d in deliveries(admin, stuck_hook["webhook_id"])} == {"delivered"}


def test_a_receiver_down_for_a_while_gets_everything_once_it_is_up(
    admin: Player, make_player: Any, hooks_worker: Any, allow_private: None
) -> None:
    receiver = Receiver(always(200))  # not started: its port refuses connections
    hook = register(admin, receiver.url)
    player = make_player()
    complete_quest(player)
    assert player.post("/me/quests/1/claim").status_code == 200

    def failed_twice() -> bool:
        rows = deliveries(admin, hook["webhook_id"])
        return len(rows) == 3 and all(d["attempts"] >= 2 for d in rows)

    support.wait_until(failed_twice, 60, "two failed attempts of each delivery")
    rows = deliveries(admin, hook["webhook_id"])
    assert {d["status"] for d in rows} == {"pending"}
    assert all(d["last_status_code"] is None and d["last_error"] for d in rows)
    assert all(d["next_attempt_at"] is not None for d in rows)
    with receiver:
        rows = wait_settled(admin, hook["webhook_id"], 3)
        assert {d["status"] for d in rows} == {"delivered"}
        assert len(receiver.by_message()) == 3
        for attempts in receiver.by_message().values():
            verify(hook["secret"], attempts[0])


def test_after_the_last_attempt_a_delivery_fails_and_a_retry_sends_it(
    admin: Player, make_player: Any, no_worker: None, allow_private: None
) -> None:
    answers = {"status": 503}
    env = webhook_env(QUESTLINE_WEBHOOK_MAX_ATTEMPTS="3")
    with (
        Receiver(lambda _r: answers["status"]) as receiver,
        support.start_worker(name="hooks", **env),
    ):
        hook = register(admin, receiver.url, ["quest.completed"])
        complete_quest(make_player())
        (row,) = wait_settled(admin, hook["webhook_id"], 1)
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("failed", 3, 503)
        assert row["last_error"] == "HTTP 503"
        assert row["next_attempt_at"] is None
        assert deliveries(admin, hook["webhook_id"], status="failed") == [row]
        assert deliveries(admin, hook["webhook_id"], status="delivered") == []

        answers["status"] = 200
        r = admin.post(f"/webhooks/{hook['webhook_id']}/deliveries/{row['delivery_id']}/retry")
        assert r.status_code == 202, r.text
        (row,) = wait_settled(admin, hook["webhook_id"], 1)
    assert (row["status"], row["attempts"]) == ("delivered", 4)
    (attempts,) = receiver.by_message().values()
    assert len(attempts) == 4
    assert len({a.message_id for a in attempts}) == 1


def test_redirects_are_not_followed(
    admin: Player, make_player: Any, no_worker: None, allow_private: None
) -> None:
    env = webhook_env(QUESTLINE_WEBHOOK_MAX_ATTEMPTS="2")
    with Receiver(always(307)) as receiver, support.start_worker(name="hooks", **env):
        hook = register(admin, receiver.url, ["quest.completed"])
        complete_quest(make_player())
        (row,) = wait_settled(admin, hook["webhook_id"], 1)
    assert (row["status"], row["last_status_code"]) == ("failed", 307)
    assert "redirect" in row["last_error"]
    assert {r.path for r in receiver.requests()} == {"/hooks"}  # never /moved


def test_a_name_that_resolves_to_loopback_is_refused_at_delivery(
    admin: Player, make_player: Any, no_worker: None
) -> None:
    """A webhook registered while its name pointed elsewhere (written here directly):
    `localhost` resolves to 127.0.0.1 when the worker sends, so nothing is sent."""
    from questline.infra import db
    from questline.webhooks import signing

    env = webhook_env(QUESTLINE_WEBHOOK_ALLOW_PRIVATE="false", QUESTLINE_WEBHOOK_MAX_ATTEMPTS="2")
    with Receiver(always(200)) as receiver, support.start_worker(name="hooks", **env):
        with db.transaction() as s:
            webhook_id = s.execute(
                sa.text(
                    "INSERT INTO webhooks (url, events, secret, created_at) VALUES "
                    "(:url, '[\"quest.completed\"]', :secret, now()) RETURNING webhook_id"
                ),
                {"url": f"http://localhost:{receiver.port}/hooks", "secret": signing.new_secret()},
            ).scalar_one()
        complete_quest(make_player())
        (row,) = wait_settled(admin, webhook_id, 1)
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("failed", 2, None)
    assert "loopback" in row["last_error"]
    assert "127.0.0.1" in row["last_error"]
    assert receiver.requests() == []


def test_a_worker_killed_mid_delivery_still_ends_delivered(
    admin: Player, make_player: Any, no_worker: None, allow_private: None
) -> None:
    arrived = threading.Event()
    release = threading.Event()

    def hang_first(request: Received) -> int:
        if request.number == 1:
            arrived.set()
            release.wait(120)
        return 200

    env = webhook_env(QUESTLINE_WEBHOOK_TIMEOUT_SECONDS="2")
    with Receiver(hang_first) as receiver:
        hook = register(admin, receiver.url, ["quest.completed"])
        worker = support.start_worker(name="hooks-doomed", **env)
        try:
            complete_quest(make_player())
            assert arrived.wait(60), "the first attempt never arrived"
            for pid in [worker.pid, *harness.children_of(worker.pid)]:
                harness.send_signal(pid, signal.SIGKILL)
        finally:
            worker.stop()
        (row,) = deliveries(admin, hook["webhook_id"])
        assert (row["status"], row["attempts"]) == ("pending", 1)
        with support.start_worker(name="hooks-next", **env):
            (row,) = wait_settled(admin, hook["webhook_id"], 1)
        release.set()
    assert (row["status"], row["attempts"]) == ("delivered", 2)
    (attempts,) = receiver.by_message().values()
    assert len(attempts) == 2
    assert attempts[0].message_id == attempts[1].message_id


def test_deliveries_whose_messages_were_lost_are_sent_by_the_timer(
    admin: Player, make_player: Any, no_worker: None, allow_private: None
) -> None:
    """Deliveries written while no worker runs, their messages then lost with Redis's
    data (FLUSHDB stands for a restart without persistence)."""
    import redis

    with Receiver(always(200)) as receiver:
        hook = register(admin, receiver.url)
        player = make_player()
        with support.start_worker(name="hooks-events", queues="sign_ins,questline"):
            complete_quest(player)
            assert player.post("/me/quests/1/claim").status_code == 200
        assert len(deliveries(admin, hook["webhook_id"], status="pending")) == 3
        redis.Redis.from_url(support.REDIS_URL).flushdb()
        with support.start_worker(name="hooks", **webhook_env()):
            rows = wait_settled(admin, hook["webhook_id"], 3)
    assert {(d["status"], d["attempts"]) for d in rows} == {("delivered", 1)}
    assert len(receiver.by_message()) == 3


def test_a_deleted_webhook_gets_nothing_more(
    admin: Player, make_player: Any, no_worker: None, allow_private: None
) -> None:
    with Receiver(always(200)) as receiver:
        hook = register(admin, receiver.url, ["quest.completed"])
        with support.start_worker(name="hooks-events", queues="sign_ins,questline"):
            complete_quest(make_player())
        r = admin.client.delete(f"/webhooks/{hook['webhook_id']}", headers=admin.headers)
        assert r.status_code == 204
        with support.start_worker(name="hooks", **webhook_env()):
            complete_quest(make_player())  # its completion writes no delivery
    from questline.infra import db

    with db.transaction() as s:
        rows = s.execute(sa.text("SELECT status, last_error FROM webhook_deliveries")).all()
    assert [tuple(r) for r in rows] == [("failed", "webhook deleted")]
    assert receiver.requests() == []


def test_one_delivery_per_subscribed_webhook_and_occurrence(
    admin: Player, make_player: Any, no_worker: None, allow_private: None
) -> None:
    """Written by the grant itself (no worker sends here), one per subscriber, never two
    for the same endpoint and occurrence."""
    from questline.infra import db
    from questline.outbox import drain

    both = register(admin, "http://127.0.0.1:9/a", ["quest.completed", "reward.earned"])
    claims = register(admin, "http://127.0.0.1:9/b", ["reward.claimed"])
    player = make_player()
    for _ in range(3):
        player.login()
    drain()  # the worker drain's own code, in this process
    rows = deliveries(admin, both["webhook_id"])
    assert sorted(d["event_type"] for d in rows) == ["quest.completed", "reward.earned"]
    assert {(d["status"], d["attempts"]) for d in rows} == {("pending", 0)}
    assert deliveries(admin, claims["webhook_id"]) == []
    assert player.post("/me/quests/1/claim").status_code == 200
    (claimed,) = deliveries(admin, claims["webhook_id"])
    assert claimed["event_type"] == "reward.claimed"
    assert len(deliveries(admin, both["webhook_id"])) == 2

    with pytest.raises(sa.exc.IntegrityError), db.transaction() as s:
        s.execute(
            sa.text(
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, "
                "status, attempts, created_at) SELECT webhook_id, event_id, event_type, "
                "payload, 'pending', 0, now() FROM webhook_deliveries WHERE delivery_id = :d"
            ),
            {"d": claimed["delivery_id"]},
        )
