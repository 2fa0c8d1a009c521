"""What one sign-in and one gameplay event cost, and what each process needs: the
figures behind docs/scaling.md and the resource requests in deploy/kubernetes/.

    python -m bench.costs [--sign-ins 3000] [--logins 200] [--events 20000] [--json FILE]

It starts a PostgreSQL cluster of its own (initdb in a temporary directory, a free
port, run as the `postgres` user), so that every CPU tick of its processes and every
WAL byte is this run's alone: the shared server on 5432 carries other people's work.
Also a private Redis, the three services (one uvicorn process each), one worker
(`--concurrency=2`, as docker-compose.yml runs it) and Flower. Then:

  idle       each process's memory (PSS, children included) and CPU over a quiet spell
  refresh    N refresh sign-ins (POST /auth/refresh, 8 clients), until all are applied
  login      M password logins (POST /auth/login, 2 clients), until all are applied
  reads      R cached catalog reads (GET /quests with a player's token, 4 clients)
  gameplay   E gameplay events in batches of 100 (POST /events, 4 clients) against the
             benchmark's 20 quests on two event types (--quests: some of them), until
             all are applied

For each load phase: CPU seconds of the API process, of the worker (main process and
pool children) and of PostgreSQL (postmaster, backends and background processes),
WAL bytes (pg_current_wal_lsn before and after), database growth, per input; and each
process's peak memory and mean CPU during the phase. CPU is read from /proc/<pid>/stat
(utime+stime of the live processes, plus cutime+cstime: the children already reaped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
from bench.load import Connection
from bench.system import PASSWORD, Bench

TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
DATABASE = "questline_costs"
LOADS = ("refresh", "login", "catalog_reads", "gameplay")

# --- /proc ------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # the fields after "(comm)"


def tree(pid: int) -> list[int]:
    """pid and its live descendants."""
    found, waiting = [], [pid]
    while waiting:
        p = waiting.pop()
        found.append(p)
        waiting.extend(harness.children_of(p))
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time of the process tree: every live process's own utime+stime, plus
    cutime+cstime (the children each has already waited for)."""
    ticks = 0
    for p in tree(pid):
        fields = _stat(p)
        if fields is not None:  # fields[11:15]: utime stime cutime cstime
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / TICK


def memory_bytes(pid: int) -> int:
    """Proportional set size of the tree (shared pages split between the sharers)."""
    total = 0
    for p in tree(pid):
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


# --- a PostgreSQL cluster of its own ------------------------------------------------------


class PrivatePostgres:
    def __init__(self, workdir: Path) -> None:
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
        self.dir = workdir / "pgdata"
        self.port = harness.free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}"
        self.proc: harness.Process | None = None

    def _as_postgres(self, *args: str) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else list(args)

    def start(self) -> PrivatePostgres:
        self.dir.mkdir()
        if os.geteuid() == 0:
            shutil.chown(self.dir.parent, "postgres")
            shutil.chown(self.dir, "postgres")
        subprocess.run(
            self._as_postgres(str(self.bin / "initdb"), "-D", str(self.dir), "-A", "trust",
                              "-U", "postgres", "--no-sync"),
            check=True, capture_output=True,
        )  # fmt: skip
        args = self._as_postgres(
            str(self.bin / "postgres"), "-D", str(self.dir), "-p", str(self.port),
            "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
        )  # fmt: skip
        self.proc = harness.Process(args, os.environ, self.dir.parent / "postgres.log")
        harness.wait_until(
            lambda: harness.port_open("127.0.0.1", self.port) or not self.proc.alive(),  # type: ignore[union-attr]
            60,
            "the private PostgreSQL to listen",
        )
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(signal.SIGINT)  # fast shutdown: clients are disconnected


# --- sampling -------------------------------------------------------------------------------


@dataclass
class Watched:
    name: str
    pid: int
    peak: int = 0
    samples: list[int] = field(default_factory=list)


class Sampler:
    """Memory of each watched process tree every half second, in a thread."""

    def __init__(self, watched: list[Watched]) -> None:
        self.watched = watched
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for w in self.watched:
                m = memory_bytes(w.pid)
                w.samples.append(m)
                w.peak = max(w.peak, m)

    @contextmanager
    def running(self) -> Iterator[None]:
        for w in self.watched:
            w.peak, w.samples = memory_bytes(w.pid), []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.stop.clear()
        self.thread.start()
        try:
            yield
        finally:
            self.stop.set()
            self.thread.join()


def wal_lsn(b: Bench) -> int:
    (lsn,) = b.sql("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")[0]
    return int(lsn)


def db_bytes(b: Bench) -> int:
    return int(b.sql("SELECT pg_database_size(current_database())")[0][0])


def events_bytes(b: Bench) -> tuple[int, int]:
    rows, size = b.sql("SELECT count(*), pg_total_relation_size('events') FROM events")[0]
    return int(rows), int(size)


def pending(b: Bench) -> int:
    return int(
        b.sql("SELECT count(*) FROM events WHERE occurred_at IS NOT NULL AND processed_at IS NULL")[
            0
        ][0]
    )


def phase(
    b: Bench,
    name: str,
    inputs: int,
    api: Watched,
    procs: dict[str, Watched],
    sampler: Sampler,
    load: Callable[[], None],
) -> dict[str, Any]:
    """Run `load`, wait until every input is applied, and what it cost per input."""
    b.sql("CHECKPOINT")  # the full-page images after a checkpoint belong to the phase
    cpu0 = {k: cpu_seconds(w.pid) for k, w in procs.items()}
    wal0, db0 = wal_lsn(b), db_bytes(b)
    t0 = time.perf_counter()
    with sampler.running():
        load()
        harness.wait_until(lambda: pending(b) == 0, 900, f"{name}: every input applied")
    elapsed = time.perf_counter() - t0
    wal1, db1 = wal_lsn(b), db_bytes(b)
    cpu = {k: cpu_seconds(w.pid) - cpu0[k] for k, w in procs.items()}
    result = {
        "inputs": inputs,
        "seconds": elapsed,
        "rate": inputs / elapsed,
        "api_cpu_ms": 1000 * cpu[api.name] / inputs,
        "worker_cpu_ms": 1000 * cpu["worker"] / inputs,
        "postgres_cpu_ms": 1000 * cpu["postgres"] / inputs,
        "wal_bytes": (wal1 - wal0) / inputs,
        "db_growth_bytes": (db1 - db0) / inputs,
        "cores": {k: v / elapsed for k, v in cpu.items()},
        "peak_mib": {k: w.peak / 2**20 for k, w in procs.items()},
    }
    say(
        f"{name}: {inputs} inputs in {elapsed:.1f} s ({result['rate']:,.0f}/s); per input "
        f"API {result['api_cpu_ms']:.2f} ms, worker {result['worker_cpu_ms']:.2f} ms, "
        f"PostgreSQL {result['postgres_cpu_ms']:.2f} ms CPU, WAL {result['wal_bytes']:,.0f} B, "
        f"database +{result['db_growth_bytes']:,.0f} B"
    )
    return result


def say(text: str) -> None:
    print(text, flush=True)


# --- the loads ---------------------------------------------------------------------------


async def _closed_loop(port: int, requests: list[tuple[str, str, bytes, str]], clients: int) -> int:
    """Send every request over `clients` keep-alive connections; how many failed."""
    queue = list(reversed(requests))
    failed = 0

    async def client() -> None:
        nonlocal failed
        conn = await Connection.open(port)
        try:
            while queue:
                method, path, body, headers = queue.pop()
                status, _ = await conn.request(method, path, body, headers)
                failed += status >= 300
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))
    return failed


def run_requests(port: int, requests: list[tuple[str, str, bytes, str]], clients: int) -> None:
    failed = asyncio.run(_closed_loop(port, requests, clients))
    if failed:
        raise RuntimeError(f"{failed} of {len(requests)} requests failed")


# --- the run -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.costs", description=__doc__.split("\n")[0])
    p.add_argument("--sign-ins", type=int, default=3000, help="refresh sign-ins")
    p.add_argument("--logins", type=int, default=200, help="password logins")
    p.add_argument("--events", type=int, default=20_000, help="gameplay events")
    p.add_argument("--reads", type=int, default=5000, help="catalog reads")
    p.add_argument(
        "--quests",
        help="comma list of indexes into bench.gameplay.QUESTS to create (default: all 20)",
    )
    p.add_argument("--idle-seconds", type=float, default=20.0)
    p.add_argument("--json", type=Path, help="write the figures here")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="questline-costs-"))
    pg = PrivatePostgres(workdir)
    redis_server = harness.RedisServer(workdir)
    started: list[harness.Process] = []
    try:
        pg.start()
        redis_server.start()
        database_url = harness.recreate_database(pg.url, DATABASE)
        b = Bench(database_url, redis_server.url, workdir, 1, True)
        b.env = {
            "QUESTLINE_DATABASE_URL": database_url,
            "QUESTLINE_REDIS_URL": redis_server.url,
            "QUESTLINE_DATA_DIR": str(workdir),
            "QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT": "1000000",
            "QUESTLINE_SIGN_INS_PER_USER_PER_MINUTE": "1000000",
            "QUESTLINE_EVENTS_PER_USER_PER_MINUTE": "1000000",
        }
        os.environ.update(b.env)
        from questline import security
        from questline.config import get_settings
        from questline.infra import migrate

        migrate.upgrade(database_url)
        security.ensure_keypair(get_settings())

        def server(app: str, name: str) -> harness.Server:
            quiet = ["--no-access-log", "--log-level", "warning"]
            s = harness.start_server(app, b.child_env(), workdir, name=name, options=quiet)
            started.append(s)
            return s

        auth = server("api.auth.main:app", "auth")
        catalog = server("api.catalog.main:app", "catalog")
        processing = server("api.processing.main:app", "processing")
        worker = harness.start_worker(b.child_env(), workdir, name="worker", concurrency=2)
        started.append(worker)
        flower_port = harness.free_port()
        flower = harness.Process(
            [sys.executable, "-m", "celery", "-A", "workers", "flower",
             f"--port={flower_port}", "--address=127.0.0.1"],
            b.child_env(FLOWER_BASIC_AUTH="ops:costs"), workdir / "flower.log",
        )  # fmt: skip
        started.append(flower)
        harness.wait_until(
            lambda: harness.port_open("127.0.0.1", flower_port), 60, "Flower to listen"
        )
        assert pg.proc is not None
        procs = {
            "auth": Watched("auth", auth.pid),
            "catalog": Watched("catalog", catalog.pid),
            "processing": Watched("processing", processing.pid),
            "worker": Watched("worker", worker.pid),
            "flower": Watched("flower", flower.pid),
            "postgres": Watched("postgres", pg.proc.pid),
        }
        sampler = Sampler(list(procs.values()))
        results: dict[str, Any] = {}

        time.sleep(5)  # imports and first connections settle
        cpu0 = {k: cpu_seconds(w.pid) for k, w in procs.items()}
        time.sleep(args.idle_seconds)
        results["idle"] = {
            k: {
                "mib": memory_bytes(w.pid) / 2**20,
                "millicores": 1000 * (cpu_seconds(w.pid) - cpu0[k]) / args.idle_seconds,
            }
            for k, w in procs.items()
        }
        for k, v in results["idle"].items():
            say(f"idle {k}: {v['mib']:.0f} MiB, {v['millicores']:.0f} millicores")

        # Refresh sign-ins: one refresh per user, 8 clients.
        n = args.sign_ins
        b.make_users(n)
        tokens = b.make_refresh_tokens(n)
        refreshes = [
            ("POST", "/auth/refresh", json.dumps({"refresh_token": t}).encode(), "") for t in tokens
        ]
        results["refresh"] = phase(
            b, "refresh sign-ins", n, procs["auth"], procs, sampler,
            lambda: run_requests(auth.port, refreshes, 8),
        )  # fmt: skip

        # Password logins: argon2 dominates the API's share.
        m = args.logins
        logins = [
            ("POST", "/auth/login",
             json.dumps({"user_name": f"player{1 + i % n}", "password": PASSWORD}).encode(), "")
            for i in range(m)
        ]  # fmt: skip
        results["login"] = phase(
            b, "password logins", m, procs["auth"], procs, sampler,
            lambda: run_requests(auth.port, logins, 2),
        )  # fmt: skip

        # Catalog reads: cached GET /quests with a player's token (no input to apply).
        import httpx

        token = httpx.post(
            f"{auth.url}/auth/login", json={"user_name": "player1", "password": PASSWORD}
        ).json()["access_token"]
        reads = [("GET", "/quests", b"", f"Authorization: Bearer {token}\r\n")] * args.reads
        results["catalog_reads"] = phase(
            b, "catalog reads (GET /quests)", args.reads, procs["catalog"], procs, sampler,
            lambda: run_requests(catalog.port, reads, 4),
        )  # fmt: skip

        # Gameplay events against the benchmark's 20 quests.
        from bench import gameplay
        from bench.gameplay import BATCH, _make_key, create_quests, ingestion_batches

        if args.quests:
            chosen = [gameplay.QUESTS[int(i)] for i in args.quests.split(",")]
            gameplay.QUESTS[:] = chosen
        b.sql("UPDATE quests SET active = false WHERE quest_id = 1")
        create_quests(b)
        key, _ = _make_key(b)
        n_batches = max(1, args.events // BATCH)
        batches = ingestion_batches(n_batches, n)
        posts = [
            ("POST", "/events", json.dumps({"events": batch}).encode(), f"X-API-Key: {key}\r\n")
            for batch in batches
        ]
        results["gameplay"] = phase(
            b, "gameplay events", n_batches * BATCH, procs["processing"], procs, sampler,
            lambda: run_requests(processing.port, posts, 4),
        )  # fmt: skip
        rows, size = events_bytes(b)
        inputs = int(b.sql("SELECT count(*) FROM events WHERE occurred_at IS NOT NULL")[0][0])
        results["events_table"] = {
            "rows": rows,
            "inputs": inputs,
            "bytes": size,
            "bytes_per_row": size / rows,
            "bytes_per_input": size / inputs,
        }
        say(
            f"events table: {rows:,} rows ({inputs:,} inputs, the rest history), "
            f"{size / 2**20:,.1f} MiB with indexes = {size / rows:,.0f} B per row, "
            f"{size / inputs:,.0f} B per input"
        )
        for k in procs:
            peak = max(results[p]["peak_mib"][k] for p in LOADS)
            busiest = max(results[p]["cores"][k] for p in LOADS)
            say(f"under load {k}: peak {peak:.0f} MiB, up to {1000 * busiest:.0f} millicores")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
    finally:
        for p in reversed(started):
            p.stop()
        redis_server.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
