"""The measurements, each on a freshly reset database with its own processes:
(a) the ceiling, (b) Celery's floor, (c) backlog drain, (d) end to end, (e) API paths."""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg2

import harness
from bench.load import Connection, closed_loop, offered_refresh_load
from bench.system import PASSWORD, Bench, wait_worker_ready

# --- (a) the ceiling ----------------------------------------------------------


def _ceiling_loop(dsn: str, n_users: int, seconds: float, out: Any) -> None:
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    rnd = random.Random(os.getpid())
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        user_id = rnd.randint(1, n_users)
        # The least a sign-in costs: lock the user's quest row, move its one period on.
        cur.execute(
            "SELECT completions FROM user_quest_progress "
            "WHERE user_id = %s AND quest_id = 1 FOR UPDATE",
            (user_id,),
        )
        cur.execute(
            "UPDATE user_quest_periods SET progress = (progress + 1) %% 3, updated_at = now() "
            "WHERE user_id = %s AND quest_id = 1 AND period_key = ''",
            (user_id,),
        )
        conn.commit()
        done += 1
    conn.close()
    out.put(done)


def rate_across_processes(
    loop: Callable[..., None], args: tuple[Any, ...], processes: int, seconds: float
) -> float:
    """Run `loop(*args, seconds, out)` in forked processes; each puts how many it did.
    The summed count per second."""
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=loop, args=(*args, seconds, out)) for _ in range(processes)]
    for p in procs:
        p.start()
    total = int(sum(out.get(timeout=seconds + 60) for _ in procs))
    for p in procs:
        p.join()
    return total / seconds


def measure_ceiling(b: Bench, seconds: float) -> float:
    n_users = 10_000
    b.reset()
    b.make_users(n_users)
    b.sql(
        "INSERT INTO user_quest_progress (user_id, quest_id, completions, streak_periods, "
        "best_streak, streak_completions, updated_at) "
        "SELECT g, 1, 0, '[]', 0, 0, now() FROM generate_series(1, %s) g",
        (n_users,),
    )
    b.sql(
        "INSERT INTO user_quest_periods (user_id, quest_id, period_key, progress, completions, "
        "updated_at) SELECT g, 1, '', 0, 0, now() FROM generate_series(1, %s) g",
        (n_users,),
    )
    return rate_across_processes(_ceiling_loop, (b.dsn, n_users), b.processes, seconds)


# --- (b) Celery's floor -------------------------------------------------------


def measure_celery_floor(b: Bench, tasks: int) -> float:
    import redis

    from bench.noop import app as noop_app
    from bench.noop import noop

    r = redis.Redis.from_url(b.redis_url)
    r.delete("bench_noop")
    with noop_app.producer_or_acquire() as producer:
        for _ in range(tasks):
            noop.apply_async(producer=producer)
    child = b.celery_worker("bench.noop", b.processes)
    with child:
        # Time the queue draining from the first message taken to the last one.
        harness.wait_until(
            lambda: r.llen("bench_noop") < tasks - 2 * b.processes or not child.alive(),
            60,
            "the no-op worker to start",
        )
        t0, left = time.perf_counter(), r.llen("bench_noop")
        harness.wait_until(lambda: r.llen("bench_noop") == 0, 300, "the no-op queue to drain")
        elapsed = time.perf_counter() - t0
    return left / elapsed


# --- (c) backlog drain --------------------------------------------------------


def measure_backlog(
    b: Bench, events: int, workers: int, *, naive: bool, rabbitmq_url: str | None = None
) -> tuple[float, str]:
    """Events/s for a worker with `workers` processes draining `events` stored sign-ins;
    on RabbitMQ (QUESTLINE_BROKER_URL=rabbitmq_url) instead of Redis when given."""
    from workers.celery_app import app as questline_app
    from workers.tasks import process_sign_in

    broker_env: dict[str, str] = {}
    if rabbitmq_url is not None:
        questline_app = harness.celery_app_for(rabbitmq_url)
        broker_env["QUESTLINE_BROKER_URL"] = rabbitmq_url
    n_users = max(1, events // 5)
    b.reset()
    b.make_users(n_users)
    b.insert_backlog(events, n_users)
    # Same process count for everyone: the sweeper (a thread in the worker's main
    # process) stays off, so only the pool processes apply sign-ins.
    child = b.celery_worker("workers", workers, QUESTLINE_SWEEPER_ENABLED="false", **broker_env)
    with child:
        wait_worker_ready(questline_app, child)
        if naive:
            ids = [row[0] for row in b.sql("SELECT event_id FROM events ORDER BY event_id")]
            t0 = time.perf_counter()
            with questline_app.producer_or_acquire() as producer:
                for event_id in ids:
                    process_sign_in.apply_async((event_id,), producer=producer)
        else:
            t0 = time.perf_counter()
            for _ in range(workers):
                questline_app.send_task("questline.drain_outbox")
        harness.wait_until(lambda: b.pending() == 0, 600, "the backlog to drain")
        elapsed = time.perf_counter() - t0
    return events / elapsed, b.check_exact(events)


# --- (d) end to end -----------------------------------------------------------


@dataclass
class EndToEnd:
    workers: int
    mode: str
    offered: float
    sustained: float
    http_p99: float
    lag: tuple[float, float, float]
    missed: int
    failed: int
    exact: str


def measure_end_to_end(
    b: Bench, workers: int, rate: float, seconds: float, *, mode: str = "batch"
) -> EndToEnd:
    from workers.celery_app import app as questline_app

    n_users = max(2000, int(rate * 2))
    b.reset()
    b.make_users(n_users)
    tokens = b.make_refresh_tokens(n_users)
    env = {"QUESTLINE_SIGN_IN_DISPATCH": mode}
    api = b.api("api.auth.main:app", b.processes, **env)
    port = api.port
    with api:
        worker = b.celery_worker("workers", workers, **env)
        with worker:
            wait_worker_ready(questline_app, worker)
            load = asyncio.run(offered_refresh_load(port, tokens, rate, seconds))
            harness.wait_until(lambda: b.pending() == 0, 300, "the sign-ins to be applied")
    return EndToEnd(
        workers=workers,
        mode=mode,
        offered=rate,
        sustained=load.rate,
        http_p99=load.latency(0.99),
        lag=b.lag_percentiles(),
        missed=load.missed,
        failed=load.failed,
        exact=b.check_exact(load.ok),
    )


# --- (e) API paths ------------------------------------------------------------


def _verify_loop(password_hash: str, seconds: float, out: Any) -> None:
    from questline import security

    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        security.verify_password(PASSWORD, password_hash)
        done += 1
    out.put(done)


@dataclass
class LoginRounds:
    """Password logins/s and bare argon2 verifications/s, measured in turns."""

    rounds: list[tuple[float, float]]  # (login/s, verify/s) of each round
    failed: int

    @property
    def ratios(self) -> list[float]:
        return [login / verify for login, verify in self.rounds]

    @property
    def ratio(self) -> float:
        """The median round's ratio: one round that met a load spike on one side does
        not decide."""
        return statistics.median(self.ratios)


def measure_login(b: Bench, seconds: float, rounds: int = 3) -> LoginRounds:
    """Rounds of bare verification then logins over HTTP (the API started once, idle
    while the bare loop runs; each round opens its connections again, so uvicorn's
    uneven split of them over its processes varies from round to round)."""
    from questline import security

    n_users = 1000
    b.reset()
    b.make_users(n_users)
    password_hash = security.hash_password(PASSWORD)
    api = b.api("api.auth.main:app", b.processes)
    port = api.port

    def login(i: int) -> tuple[str, str, bytes, str]:
        body = {"user_name": f"player{1 + i % n_users}", "password": PASSWORD}
        return "POST", "/auth/login", json.dumps(body).encode(), ""

    measured, failed = [], 0
    with api:
        for _ in range(rounds):
            verify = rate_across_processes(_verify_loop, (password_hash,), b.processes, seconds)
            load = asyncio.run(closed_loop(port, login, seconds, connections=4 * b.processes))
            measured.append((load.rate, verify))
            failed += load.failed
    return LoginRounds(measured, failed)


def measure_quests(b: Bench, seconds: float) -> tuple[float, float, int]:
    """Cached GET /quests req/s, and the bare endpoint's, answering the same body."""
    b.reset()
    b.make_users(1)
    connections = 32
    api = b.api("api.catalog.main:app", b.processes)
    port = api.port
    with api:
        from questline import security

        token, _ = security.mint_access_token(1, "player")
        auth = f"Authorization: Bearer {token}\r\n"

        async def first() -> bytes:
            conn = await Connection.open(port)
            status, body = await conn.request("GET", "/quests", headers=auth)
            conn.close()
            if status != 200:
                raise RuntimeError(f"GET /quests answered {status}: {body!r}")
            return body

        body = asyncio.run(first())  # fills the cache
        quests = asyncio.run(
            closed_loop(port, lambda _i: ("GET", "/quests", b"", auth), seconds, connections)
        )
    bare = b.api("bench.bare:app", b.processes, BENCH_QUESTS_JSON=body.decode())
    bare_port = bare.port
    with bare:
        plain = asyncio.run(
            closed_loop(bare_port, lambda _i: ("GET", "/quests", b"", ""), seconds, connections)
        )
    return quests.rate, plain.rate, quests.failed + plain.failed
