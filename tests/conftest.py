"""Fixtures on real PostgreSQL, real Redis, real HTTP and real Celery workers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests import support

os.environ.update(support.TEST_ENV)

import httpx  # noqa: E402
import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

PASSWORD = "correct-horse-battery"


def _check_services() -> None:
    try:
        engine = sa.create_engine(f"{support.PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {support.TEST_DB} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {support.TEST_DB}"))
        engine.dispose()
    except sa.exc.OperationalError as exc:
        pytest.exit(
            f"PostgreSQL is not reachable at {support.PG_SERVER} ({exc}); {support.START_PG}",
            returncode=3,
        )
    try:
        redis.Redis.from_url(support.REDIS_URL, socket_connect_timeout=2).flushdb()
    except redis.RedisError as exc:
        pytest.exit(
            f"Redis is not reachable at {support.REDIS_URL} ({exc}); {support.START_REDIS}",
            returncode=3,
        )


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[str]:
    """A fresh test database, migrated with the seed catalog."""
    _check_services()
    from questline.infra import migrate

    migrate.upgrade(support.DATABASE_URL)
    return support.DATABASE_URL


# Webhook tables last: a worker's drain reads webhooks after it has locked events.
TABLES = (
    "user_rewards, user_quest_progress, idempotency_keys, refresh_tokens, events, users, "
    "webhook_deliveries, webhooks"
)


@pytest.fixture(autouse=True)
def clean_state(database: str) -> Iterator[None]:
    """Each test starts from the seed catalog with no users, and an empty Redis db."""
    from questline.infra.db import get_engine

    # The suite's worker may still be applying the last test's sign-ins: its drain locks
    # events, then progress rows, while TRUNCATE takes them in its own order, and
    # PostgreSQL ends one of the two as a deadlock. The drain retries; so do we.
    for attempt in range(5):
        try:
            _reset_tables(get_engine())
            break
        except sa.exc.OperationalError as exc:
            if getattr(exc.orig, "pgcode", None) != "40P01" or attempt == 4:
                raise
    # This process (the in-process server) trusts neither its catalog version nor its
    # banned ids any more: user ids start again at 1.
    from questline.catalog import cache
    from questline.users import bans

    cache.forget_lease()
    bans.ban_list.forget()
    redis.Redis.from_url(support.REDIS_URL).flushdb()
    return


def _reset_tables(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE"))
        conn.execute(sa.text("DELETE FROM quests WHERE quest_id > 1"))
        conn.execute(
            sa.text(
                "UPDATE quests SET name = 'sign-in-three-times', reward_id = 1, "
                "auto_claim = false, streak = 3, duplication = 2, active = true, "
                "description = 'Sign in three times to earn ten diamonds; can be earned twice.', "
                # v2's fields back to v1's rule (a test may have patched them).
                "trigger = '{\"event\": \"sign_in\"}', measure = 'count', period = 'none', "
                "reset_at = '00:00', week_starts_on = 'monday', timezone = 'user', "
                "max_per_period = NULL, grace_periods = 0, requires = '[]', starts_at = NULL, "
                "ends_at = NULL, claim_within_seconds = NULL "
                "WHERE quest_id = 1"
            )
        )
        # After quest 1 is back on reward 1: a test may have moved it to a new reward.
        conn.execute(sa.text("DELETE FROM rewards WHERE reward_id > 1"))
        conn.execute(
            sa.text(
                "UPDATE rewards SET reward_name = 'Ten Diamonds', reward_item = 'diamond', "
                "reward_qty = 10, items = '[{\"item\": \"diamond\", \"qty\": 10}]' "
                "WHERE reward_id = 1"
            )
        )
        # The catalog was written behind the catalog service's back: count it as a write.
        # Never reset the version: a process may still hold copies of lower versions.
        conn.execute(sa.text("UPDATE catalog_state SET version = version + 1"))


@pytest.fixture
def session() -> Iterator[Session]:
    from questline.infra.db import session_factory

    with session_factory()() as s:
        yield s
        s.rollback()


@pytest.fixture(scope="session")
def server(database: str) -> Iterator[support.LiveServer]:
    """The all-in-one app over real HTTP (uvicorn on a free port)."""
    from api.main import app

    with support.LiveServer(app) as live:
        yield live


@pytest.fixture
def client(server: support.LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="session")
def suite_worker(database: str) -> Iterator[support.SuiteWorker]:
    workers = support.SuiteWorker()
    yield workers
    workers.stop()


# --- the worker tests that run on both brokers --------------------------------------------


@pytest.fixture(scope="session")
def rabbitmq(database: str) -> Iterator[support.Broker]:
    """The machine's RabbitMQ, on the run's own virtual host (created when missing)."""
    import harness

    try:
        broker = support.rabbitmq_broker()
    except harness.BrokerUnavailable as exc:
        pytest.fail(f"RabbitMQ is needed by the worker tests on both brokers: {exc}")
    yield broker
    broker.close()


@pytest.fixture(scope="session", params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> support.Broker:
    """Each broker the worker path runs on: Redis (the suite's own configuration), then
    RabbitMQ (QUESTLINE_BROKER_URL=amqp://..., Redis still the cache). Tests that take
    it run once per broker."""
    if request.param == "redis":
        return support.Broker("redis", None)
    rabbitmq: support.Broker = request.getfixturevalue("rabbitmq")
    return rabbitmq


@pytest.fixture(scope="session")
def rabbitmq_suite_worker(rabbitmq: support.Broker) -> Iterator[support.SuiteWorker]:
    workers = support.SuiteWorker("suite-rabbitmq", rabbitmq.env)
    yield workers
    workers.stop()


@pytest.fixture
def broker_worker(broker: support.Broker, request: pytest.FixtureRequest) -> support.Process:
    """The suite worker on `broker` (on RabbitMQ one of its own, started when first needed)."""
    name = "suite_worker" if broker.name == "redis" else "rabbitmq_suite_worker"
    workers: support.SuiteWorker = request.getfixturevalue(name)
    return workers.running()


@pytest.fixture(scope="session")
def rabbitmq_api(rabbitmq: support.Broker) -> Iterator[str]:
    """The all-in-one app in a process of its own, publishing to RabbitMQ."""
    proc = support.start_server("api.main:app", name="api-rabbitmq", **rabbitmq.env)
    yield proc.url
    proc.stop()


@pytest.fixture
def broker_api(broker: support.Broker, request: pytest.FixtureRequest) -> str:
    """The base URL of the all-in-one app publishing to `broker`."""
    if broker.name == "redis":
        server: support.LiveServer = request.getfixturevalue("server")
        return server.url
    url: str = request.getfixturevalue("rabbitmq_api")
    return url


@pytest.fixture
def worker(suite_worker: support.SuiteWorker) -> support.Process:
    """A real Celery worker process (prefork, 2 children) on the test broker, shared
    with the tests before and after; its sweeper applies any sign-in left pending."""
    return suite_worker.running()


@pytest.fixture
def no_worker(suite_worker: support.SuiteWorker) -> None:
    """No worker on the test database, so no sweeper: for tests whose sign-ins must stay
    pending until they apply them, on a machine of any speed."""
    for workers in support.SuiteWorker.started:
        workers.stop()


class Player:
    """A signed-up player with helpers for the calls tests make most."""

    def __init__(self, client: httpx.Client, name: str, password: str = PASSWORD) -> None:
        self.client = client
        self.name = name
        self.password = password
        r = client.post("/auth/signup", json={"user_name": name, "password": password})
        assert r.status_code == 201, r.text
        self.user_id: int = r.json()["user_id"]
        self.token: str | None = None
        self.refresh_token: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        if self.token is None:
            self.login()
        return {"Authorization": f"Bearer {self.token}"}

    def login(self) -> dict[str, Any]:
        r = self.client.post(
            "/auth/login", json={"user_name": self.name, "password": self.password}
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        self.token, self.refresh_token = body["access_token"], body["refresh_token"]
        return body

    def refresh(self) -> dict[str, Any]:
        r = self.client.post("/auth/refresh", json={"refresh_token": self.refresh_token})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        self.token, self.refresh_token = body["access_token"], body["refresh_token"]
        return body

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(path, headers=self.headers, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.headers, **kw.pop("headers", {})}
        return self.client.post(path, headers=headers, **kw)

    def quest(self, quest_id: int = 1) -> dict[str, Any]:
        r = self.get("/me/quests")
        assert r.status_code == 200, r.text
        return next(q for q in r.json() if q["quest_id"] == quest_id)

    def wait_processed(self, sign_in_id: int, timeout: float = 60) -> None:
        support.wait_until(
            lambda: self.get(f"/sign-ins/{sign_in_id}").json().get("status") == "processed",
            timeout,
            f"sign-in {sign_in_id} to be processed",
        )


@pytest.fixture
def make_player(client: httpx.Client) -> Any:
    counter = iter(range(1, 10_000))

    def make(name: str | None = None) -> Player:
        return Player(client, name or f"player{next(counter)}")

    return make


@pytest.fixture
def admin(client: httpx.Client) -> Player:
    from questline.infra import db
    from questline.users import service as users

    with db.transaction() as s:
        users.signup(s, user_name="root-admin", password=PASSWORD, role="admin")
    player = Player.__new__(Player)
    player.client, player.name, player.password = client, "root-admin", PASSWORD
    player.token = player.refresh_token = None
    player.login()
    return player
