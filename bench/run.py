"""Questline throughput benchmark: where the limit is, and how close Questline gets.

    python bench/run.py            # the full run (~8 minutes)
    python bench/run.py --quick    # the same measurements, shorter (~2-3 minutes)

It starts its own Redis (a free port) and its own PostgreSQL database
(`questline_bench` on the local server), unless given --redis-url / --database-url,
and measures side by side, with the same number of processes:

  (a) ceiling       a raw psycopg2 loop: one locked progress update per event
  (b) Celery floor  no-op tasks/s through Celery with Questline's delivery settings
  (c) backlog       Questline workers draining sign-ins already in the outbox
                    (batched drain with 1, 2, 4 processes; the naive one task per
                    sign-in with --processes)
  (d) end to end    a steady offered load of refresh sign-ins over HTTP:
                    sustained sign-ins/s and sign-in -> processed lag p50/p95/p99
  (e) API paths     password login vs bare argon2 verification; cached GET /quests
                    vs a bare FastAPI JSON endpoint

Every run that applies sign-ins is checked for exactness afterwards: applied =
sent, and every user's progress, rewards and history match their sign-in count.
Prints a table with ratios and writes a PNG plot (needs the `bench` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing as mp
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PASSWORD = "bench-password-123"


# --- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


class Child:
    """A process of ours, in its own session, with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path, name: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.log.close()


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of a process and all its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        pid = frontier.pop()
        for child, parent in parents.items():
            if parent == pid and child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(times.get(pid, 0.0) for pid in tree)


@contextmanager
def running(child: Child) -> Iterator[Child]:
    try:
        yield child
    finally:
        child.stop()


# --- the bench environment ----------------------------------------------------


@dataclass
class Bench:
    database_url: str  # SQLAlchemy URL
    redis_url: str
    data_dir: Path
    processes: int
    quick: bool
    env: dict[str, str] = field(default_factory=dict)

    @property
    def dsn(self) -> str:
        return self.database_url.replace("postgresql+psycopg2://", "postgresql://")

    def child_env(self, **overrides: str) -> dict[str, str]:
        return {**os.environ, **self.env, **overrides, "PYTHONPATH": str(ROOT)}

    def connect(self) -> Any:
        conn = psycopg2.connect(self.dsn)
        conn.autocommit = True
        return conn

    def sql(self, query: str, args: Any = None) -> list[tuple[Any, ...]]:
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(query, args)
            rows = cur.fetchall() if cur.description else []
        conn.close()
        return rows

    def reset(self) -> None:
        self.sql(
            "TRUNCATE user_rewards, user_quest_progress, idempotency_keys, refresh_tokens, "
            "events, users RESTART IDENTITY CASCADE"
        )
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    def make_users(self, n: int) -> None:
        from questline import security

        password_hash = security.hash_password(PASSWORD)
        self.sql(
            "INSERT INTO users (user_name, password_hash, gold, diamond, status, role, "
            "created_at) SELECT 'player' || g, %s, 0, 0, 'not_new', 'player', now() "
            "FROM generate_series(1, %s) g",
            (password_hash, n),
        )

    def make_refresh_tokens(self, n_users: int) -> list[str]:
        """One refresh token per user: each is the head of that player's refresh chain."""
        tokens = [secrets.token_urlsafe(32) for _ in range(n_users)]
        rows = [
            (hashlib.sha256(t.encode()).hexdigest(), uid, secrets.token_hex(16))
            for uid, t in enumerate(tokens, start=1)
        ]
        with self.connect() as conn, conn.cursor() as cur:
            from psycopg2.extras import execute_values

            execute_values(
                cur,
                "INSERT INTO refresh_tokens (token_hash, user_id, family_id, created_at, "
                "expires_at) VALUES %s",
                rows,
                template="(%s, %s, %s, now(), now() + interval '1 day')",
                page_size=1000,
            )
        conn.close()
        return tokens

    def insert_backlog(self, n_events: int, n_users: int) -> None:
        """n sign-ins already in the outbox, users interleaved as logins would be."""
        self.sql(
            "INSERT INTO events (user_id, type, data, created_at, attempts) "
            "SELECT 1 + (g %% %s), 'sign_in', '{\"via\": \"bench\"}', now(), 0 "
            "FROM generate_series(0, %s - 1) g",
            (n_users, n_events),
        )

    def pending(self) -> int:
        """Unprocessed sign-ins; -1 while the database does not answer (a restart)."""
        try:
            return self._pending()
        except psycopg2.OperationalError:
            return -1

    def _pending(self) -> int:
        return int(
            self.sql("SELECT count(*) FROM events WHERE type = 'sign_in' AND processed_at IS NULL")[
                0
            ][0]
        )

    def check_exact(self, sent: int) -> str:
        """'' if every sign-in was applied exactly once and nothing was over-granted."""
        problems = []
        total, pending = self.sql(
            "SELECT count(*), count(*) FILTER (WHERE processed_at IS NULL) "
            "FROM events WHERE type = 'sign_in'"
        )[0]
        if total != sent:
            problems.append(f"{total} sign-ins stored, {sent} sent")
        if pending:
            problems.append(f"{pending} sign-ins not applied")
        # Quest 1 (the seed, the only active quest): streak S, duplication D. A user
        # with n sign-ins has min(D, n/S) completions, as many rewards, the rest of
        # the streak, and one progress event per sign-in until the cap.
        (wrong,) = self.sql(
            """
            WITH s AS (SELECT user_id, count(*) AS n FROM events
                       WHERE type = 'sign_in' GROUP BY user_id),
                 q AS (SELECT streak, duplication FROM quests WHERE quest_id = 1),
                 r AS (SELECT user_id, count(*) AS k FROM user_rewards GROUP BY user_id),
                 h AS (SELECT user_id, count(*) AS k FROM events
                       WHERE type = 'quest_progress' GROUP BY user_id),
                 e AS (SELECT s.user_id, s.n, q.streak, q.duplication,
                              least(q.duplication, s.n / q.streak) AS c FROM s, q)
            SELECT count(*) FROM e
            LEFT JOIN user_quest_progress p ON p.user_id = e.user_id AND p.quest_id = 1
            LEFT JOIN r ON r.user_id = e.user_id
            LEFT JOIN h ON h.user_id = e.user_id
            WHERE coalesce(p.completions, 0) <> e.c
               OR coalesce(p.curr_streak, 0)
                  <> CASE WHEN e.c < e.duplication THEN e.n - e.streak * e.c ELSE 0 END
               OR coalesce(r.k, 0) <> e.c
               OR coalesce(h.k, 0) <> least(e.n, e.streak * e.duplication)
            """
        )[0]
        if wrong:
            problems.append(f"{wrong} users with wrong progress, rewards or history")
        return "; ".join(problems)

    def lag_percentiles(self) -> tuple[float, float, float]:
        p50, p95, p99 = self.sql(
            "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY "
            "extract(epoch FROM processed_at - created_at)) FROM events WHERE type = 'sign_in'"
        )[0][0]
        return float(p50), float(p95), float(p99)

    # -- processes of the system under test --

    def celery_worker(self, app: str, concurrency: int, **env: str) -> Child:
        name = f"bench-{time.monotonic_ns()}@%h"
        child = Child(
            [
                PY,
                "-m",
                "celery",
                "-A",
                app,
                "worker",
                "--loglevel=WARNING",
                f"--concurrency={concurrency}",
                "--pool=prefork",
                "--without-gossip",
                "--without-mingle",
                f"--hostname={name}",
            ],
            self.child_env(**env),
            self.data_dir,
            "worker",
        )
        return child

    def api(self, app: str, workers: int, **env: str) -> tuple[Child, int]:
        port = free_port()
        child = Child(
            [
                PY,
                "-m",
                "uvicorn",
                app,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            self.child_env(**env),
            self.data_dir,
            "api",
        )

        def ready() -> bool:
            if not child.alive():
                raise RuntimeError(f"{app} exited:\n{child.output()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for(ready, 30, f"{app} to listen")
        time.sleep(0.5 * workers)  # let every uvicorn worker finish importing
        return child, port


def wait_worker_ready(celery_app: Any, child: Child) -> None:
    def ready() -> bool:
        if not child.alive():
            raise RuntimeError(f"worker exited:\n{child.output()}")
        return bool(celery_app.control.ping(timeout=0.3))

    wait_for(ready, 60, "the worker to answer a ping")


# --- (a) the ceiling ----------------------------------------------------------


def _ceiling_loop(dsn: str, n_users: int, seconds: float, out: Any) -> None:
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    rnd = random.Random(os.getpid())
    done = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        user_id = rnd.randint(1, n_users)
        cur.execute(
            "SELECT curr_streak FROM user_quest_progress "
            "WHERE user_id = %s AND quest_id = 1 FOR UPDATE",
            (user_id,),
        )
        (streak,) = cur.fetchone()
        cur.execute(
            "UPDATE user_quest_progress SET curr_streak = %s, updated_at = now() "
            "WHERE user_id = %s AND quest_id = 1",
            ((streak + 1) % 3, user_id),
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
    total = sum(out.get(timeout=seconds + 60) for _ in procs)
    for p in procs:
        p.join()
    return total / seconds


def measure_ceiling(b: Bench, seconds: float) -> float:
    n_users = 10_000
    b.reset()
    b.make_users(n_users)
    b.sql(
        "INSERT INTO user_quest_progress (user_id, quest_id, curr_streak, completions, "
        "updated_at) SELECT g, 1, 0, 0, now() FROM generate_series(1, %s) g",
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
    with running(child):
        # Time the queue draining from the first message taken to the last one.
        wait_for(
            lambda: r.llen("bench_noop") < tasks - 2 * b.processes or not child.alive(),
            60,
            "the no-op worker to start",
        )
        t0, left = time.perf_counter(), r.llen("bench_noop")
        wait_for(lambda: r.llen("bench_noop") == 0, 300, "the no-op queue to drain")
        elapsed = time.perf_counter() - t0
    return left / elapsed


# --- (c) backlog drain --------------------------------------------------------


def measure_backlog(b: Bench, events: int, workers: int, *, naive: bool) -> tuple[float, str]:
    """Events/s for a worker with `workers` processes draining `events` stored sign-ins."""
    from workers.celery_app import app as questline_app
    from workers.tasks import drain_outbox, process_sign_in

    n_users = max(1, events // 5)
    b.reset()
    b.make_users(n_users)
    b.insert_backlog(events, n_users)
    # Same process count for everyone: the sweeper (a thread in the worker's main
    # process) stays off, so only the pool processes apply sign-ins.
    child = b.celery_worker("workers", workers, QUESTLINE_SWEEPER_ENABLED="false")
    with running(child):
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
                drain_outbox.apply_async()
        wait_for(lambda: b.pending() == 0, 600, "the backlog to drain")
        elapsed = time.perf_counter() - t0
    return events / elapsed, b.check_exact(events)


# --- HTTP load ----------------------------------------------------------------

_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


class Connection:
    """One keep-alive HTTP/1.1 connection: a lean client so the load costs little CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.port = 0

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = cls(reader, writer)
        conn.port = port
        return conn

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: str = ""
    ) -> tuple[int, bytes]:
        try:
            return await self._request(method, path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closes keep-alive connections left idle (uvicorn: 5 s).
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            return await self._request(method, path, body, headers)

    async def _request(
        self, method: str, path: str, body: bytes = b"", headers: str = ""
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        match = _LENGTH.search(raw)
        payload = await self.reader.readexactly(int(match.group(1))) if match else b""
        return int(raw[9:12]), payload

    def close(self) -> None:
        self.writer.close()


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    missed: int = 0  # offered while every connection was busy
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def latency(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


async def offered_refresh_load(
    port: int, tokens: list[str], rate: float, seconds: float, connections: int = 64
) -> LoadResult:
    """Open loop: a refresh every 1/rate s, each by a player whose last one has answered."""
    result = LoadResult()
    players = deque(tokens)
    idle = [await Connection.open(port) for _ in range(connections)]

    async def one(conn: Connection, token: str) -> None:
        t = time.perf_counter()
        status, payload = await conn.request(
            "POST", "/auth/refresh", json.dumps({"refresh_token": token}).encode()
        )
        result.latencies.append(time.perf_counter() - t)
        idle.append(conn)
        if status == 200:
            result.ok += 1
            players.append(json.loads(payload)["refresh_token"])
        else:
            result.failed += 1

    tasks = []
    start = time.perf_counter()
    sent = 0
    while True:
        due = start + sent / rate
        if due >= start + seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent += 1
        if not idle or not players:
            result.missed += 1
            continue
        tasks.append(asyncio.create_task(one(idle.pop(), players.popleft())))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return result


async def closed_loop(
    port: int,
    request: Callable[[int], tuple[str, str, bytes, str]],
    seconds: float,
    connections: int,
) -> LoadResult:
    """Each connection sends its next request as soon as the last one answered."""
    result = LoadResult()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def run() -> None:
        conn = await Connection.open(port)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            status, _ = await conn.request(*request(next(counter)))
            result.latencies.append(time.perf_counter() - t)
            if status == 200:
                result.ok += 1
            else:
                result.failed += 1
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(connections)))
    result.elapsed = time.perf_counter() - start
    return result


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
    api, port = b.api("api.auth.main:app", b.processes, **env)
    with running(api):
        worker = b.celery_worker("workers", workers, **env)
        with running(worker):
            wait_worker_ready(questline_app, worker)
            load = asyncio.run(offered_refresh_load(port, tokens, rate, seconds))
            wait_for(lambda: b.pending() == 0, 300, "the sign-ins to be applied")
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


def measure_bare_argon2(b: Bench, seconds: float) -> float:
    from questline import security

    password_hash = security.hash_password(PASSWORD)
    return rate_across_processes(_verify_loop, (password_hash,), b.processes, seconds)


def measure_login(b: Bench, seconds: float) -> tuple[float, int]:
    n_users = 1000
    b.reset()
    b.make_users(n_users)
    api, port = b.api("api.auth.main:app", b.processes)

    def login(i: int) -> tuple[str, str, bytes, str]:
        body = {"user_name": f"player{1 + i % n_users}", "password": PASSWORD}
        return "POST", "/auth/login", json.dumps(body).encode(), ""

    with running(api):
        load = asyncio.run(closed_loop(port, login, seconds, connections=4 * b.processes))
    return load.rate, load.failed


def measure_quests(b: Bench, seconds: float) -> tuple[float, float, int]:
    """Cached GET /quests req/s, and the bare endpoint's, answering the same body."""
    b.reset()
    b.make_users(1)
    connections = 32
    api, port = b.api("api.catalog.main:app", b.processes)
    with running(api):
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
    bare, bare_port = b.api("bench.bare:app", b.processes, BENCH_QUESTS_JSON=body.decode())
    with running(bare):
        plain = asyncio.run(
            closed_loop(bare_port, lambda _i: ("GET", "/quests", b"", ""), seconds, connections)
        )
    return quests.rate, plain.rate, quests.failed + plain.failed


# --- report -------------------------------------------------------------------


def plot(path: Path, backlog: dict[int, float], e2e: list[EndToEnd], ceiling: float,
         floor: float) -> None:  # fmt: skip
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4), dpi=80)
    ws = sorted(backlog)
    left.plot(ws, [backlog[w] for w in ws], "o-", label="Questline batched drain")
    left.axhline(ceiling, color="k", ls="--", lw=1, label="ceiling: raw locked update")
    left.axhline(floor, color="r", ls=":", lw=1, label="Celery floor: no-op tasks")
    left.set(xlabel="worker processes", ylabel="sign-ins/s", title="Backlog drain", xticks=ws)
    left.legend(fontsize=7)
    batched = sorted((r for r in e2e if r.mode == "batch"), key=lambda r: r.workers)
    xs = [r.workers for r in batched]
    right.plot(xs, [r.sustained for r in batched], "o-", label="sustained sign-ins/s")
    if batched:
        right.axhline(batched[0].offered, color="k", ls="--", lw=1, label="offered")
    right.set(
        xlabel="worker processes",
        ylabel="sign-ins/s",
        xticks=xs,
        title="End to end (refresh over HTTP)",
    )
    lag = right.twinx()
    lag.plot(xs, [r.lag[2] * 1000 for r in batched], "s--", color="tab:red", label="lag p99")
    lag.set_ylabel("lag p99 (ms)", color="tab:red")
    lag.set_ylim(bottom=0)
    right.set_ylim(bottom=0)
    lines = right.get_legend_handles_labels()
    more = lag.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs (~2-3 minutes)")
    parser.add_argument(
        "--processes",
        type=int,
        default=2,
        help="processes for the ceiling, the floor, the API and the login "
        "comparison (default 2, the cores of the reference machine)",
    )
    parser.add_argument("--workers", default="1,2,4", help="worker process counts to sweep")
    parser.add_argument("--rate", type=float, default=1200, help="offered refresh sign-ins/s")
    parser.add_argument("--events", type=int, help="backlog size (default 50,000; quick 10,000)")
    parser.add_argument("--database-url", help="a PostgreSQL URL to use (it is wiped)")
    parser.add_argument(
        "--pg-server",
        default="postgresql+psycopg2://postgres@127.0.0.1:5432",
        help="where to create the questline_bench database",
    )
    parser.add_argument("--redis-url", help="a Redis db to use (it is flushed)")
    parser.add_argument("--skip", default="", help="comma list of parts to skip: a,b,c,d,e")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "performance.png")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    quick = args.quick
    workers = [int(w) for w in args.workers.split(",")]
    events = args.events or (10_000 if quick else 50_000)
    secs = 4.0 if quick else 15.0
    e2e_secs = 8.0 if quick else 20.0
    skip = set(args.skip.split(","))

    data_dir = Path(tempfile.mkdtemp(prefix="questline-bench-"))
    redis_child = None
    if args.redis_url:
        redis_url = args.redis_url
    else:
        port = free_port()
        redis_child = Child(
            [
                "redis-server",
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            dict(os.environ),
            data_dir,
            "redis",
        )
        redis_url = f"redis://127.0.0.1:{port}/0"

        def redis_up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                return False

        wait_for(redis_up, 10, "redis-server to listen")
    database_url = args.database_url or f"{args.pg_server}/questline_bench"
    if not args.database_url:
        import sqlalchemy as sa

        engine = sa.create_engine(f"{args.pg_server}/postgres", isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("DROP DATABASE IF EXISTS questline_bench WITH (FORCE)"))
            conn.execute(sa.text("CREATE DATABASE questline_bench"))
        engine.dispose()

    b = Bench(database_url, redis_url, data_dir, args.processes, quick)
    b.env = {
        "QUESTLINE_DATABASE_URL": database_url,
        "QUESTLINE_REDIS_URL": redis_url,
        "QUESTLINE_DATA_DIR": str(data_dir),
        "QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT": "1000000",
    }
    os.environ.update(b.env)  # this process publishes tasks and mints tokens too
    sys.path.insert(0, str(ROOT))
    from questline.infra import migrate

    migrate.upgrade(database_url)

    rows: list[tuple[str, float, str]] = []
    failures: list[str] = []
    results: dict[str, Any] = {"processes": b.processes, "quick": quick, "events": events}

    def say(text: str) -> None:
        print(text, flush=True)

    try:
        ceiling = floor = float("nan")
        if "a" not in skip:
            ceiling = measure_ceiling(b, secs)
            say(f"(a) ceiling, raw locked update, {b.processes} processes: {ceiling:,.0f} tx/s")
        if "b" not in skip:
            floor = measure_celery_floor(b, 4000 if quick else 20_000)
            say(f"(b) Celery floor, no-op tasks, {b.processes} processes: {floor:,.0f} tasks/s")
        results.update(ceiling=ceiling, celery_floor=floor)

        backlog: dict[int, float] = {}
        if "c" not in skip:
            for w in workers:
                rate, problem = measure_backlog(b, events, w, naive=False)
                backlog[w] = rate
                say(
                    f"(c) backlog drain, batched, {w} processes: {rate:,.0f} sign-ins/s "
                    f"{'exact' if not problem else 'NOT EXACT: ' + problem}"
                )
                if problem:
                    failures.append(f"backlog {w}: {problem}")
                rows.append((f"backlog drain, batched, {w} proc", rate, "sign-ins/s"))
            naive_events = max(1000, events // 10)
            rate, problem = measure_backlog(b, naive_events, b.processes, naive=True)
            say(
                f"(c) backlog drain, one task per sign-in, {b.processes} processes: "
                f"{rate:,.0f} sign-ins/s {'exact' if not problem else 'NOT EXACT: ' + problem}"
            )
            if problem:
                failures.append(f"naive backlog: {problem}")
            rows.append(
                (f"backlog drain, one task per sign-in, {b.processes} proc", rate, "sign-ins/s")
            )
            results["backlog"] = backlog
            results["backlog_naive"] = rate

        e2e: list[EndToEnd] = []
        if "d" not in skip:
            runs = [(w, "batch") for w in workers] + [(b.processes, "per_event")]
            for w, mode in runs:
                r = measure_end_to_end(b, w, args.rate, e2e_secs, mode=mode)
                e2e.append(r)
                say(
                    f"(d) end to end, {mode}, {w} worker proc: offered {r.offered:,.0f}/s, "
                    f"sustained {r.sustained:,.0f}/s, lag p50/p95/p99 "
                    f"{r.lag[0] * 1000:,.0f}/{r.lag[1] * 1000:,.0f}/{r.lag[2] * 1000:,.0f} ms, "
                    f"HTTP p99 {r.http_p99 * 1000:,.0f} ms, missed {r.missed}, failed "
                    f"{r.failed}, {'exact' if not r.exact else 'NOT EXACT: ' + r.exact}"
                )
                if r.exact:
                    failures.append(f"end to end {mode} {w}: {r.exact}")
            results["end_to_end"] = [r.__dict__ for r in e2e]

        if "e" not in skip:
            argon = measure_bare_argon2(b, secs)
            login, login_failed = measure_login(b, secs)
            say(
                f"(e) password login {login:,.1f}/s vs bare argon2 verify {argon:,.1f}/s "
                f"({login / argon:.2f}); failed {login_failed}"
            )
            quests, bare, quests_failed = measure_quests(b, secs)
            say(
                f"(e) cached GET /quests {quests:,.0f}/s vs bare endpoint {bare:,.0f}/s "
                f"({quests / bare:.2f}); failed {quests_failed}"
            )
            if login_failed or quests_failed:
                failures.append(f"API errors: login {login_failed}, quests {quests_failed}")
            results.update(login=login, argon2=argon, quests=quests, bare=bare)
    finally:
        if redis_child is not None:
            redis_child.stop()

    print()
    print(
        f"Questline benchmark, {b.processes} processes per side, {os.cpu_count()} cores"
        f"{' (quick)' if quick else ''}"
    )
    print("| measurement | value | / ceiling | / Celery floor |")
    print("|---|---:|---:|---:|")
    print(f"| (a) ceiling: raw psycopg2 locked update | {ceiling:,.0f} tx/s | 1.00 | |")
    print(
        f"| (b) Celery floor: no-op tasks | {floor:,.0f} tasks/s | {floor / ceiling:.2f} | 1.00 |"
    )
    for name, value, unit in rows:
        print(f"| (c) {name} | {value:,.0f} {unit} | {value / ceiling:.2f} | {value / floor:.2f} |")
    for r in e2e:
        print(
            f"| (d) end to end, {r.mode}, {r.workers} worker proc, offered {r.offered:,.0f}/s "
            f"| {r.sustained:,.0f} sign-ins/s, lag p50/p95/p99 {r.lag[0] * 1000:,.0f}/"
            f"{r.lag[1] * 1000:,.0f}/{r.lag[2] * 1000:,.0f} ms "
            f"| {r.sustained / ceiling:.2f} | {r.sustained / floor:.2f} |"
        )
    if "login" in results:
        print(
            f"| (e) password login vs bare argon2 verify | {results['login']:,.1f} vs "
            f"{results['argon2']:,.1f} /s = {results['login'] / results['argon2']:.2f} | | |"
        )
        print(
            f"| (e) cached GET /quests vs bare FastAPI endpoint | {results['quests']:,.0f} vs "
            f"{results['bare']:,.0f} req/s = {results['quests'] / results['bare']:.2f} | | |"
        )
    if "c" not in skip and "d" not in skip:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(args.plot, results["backlog"], e2e, ceiling, floor)
        print(f"\nplot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if failures:
        print("\nEXACTNESS OR ERRORS:\n  " + "\n  ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
