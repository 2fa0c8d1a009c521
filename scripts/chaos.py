"""Fault-injection run: prove that no acknowledged sign-in is lost or applied twice
and that no reward is granted beyond the rules, while workers, Redis and PostgreSQL
are killed and restarted under load.

    python scripts/chaos.py                                   # the full run (~3 min)
    python scripts/chaos.py --negative-control --expect-failure

The run starts its own Redis (a free port, AOF fsync always) and uses its own
PostgreSQL database (questline_chaos) on the local server; three Celery workers
run in restart loops and the all-in-one API in uvicorn. Players sign in (mostly
refresh, some password logins), 10 % of sign-ins are published to the broker a
second time, and players claim concurrently with repeated and fresh
Idempotency-Keys. Meanwhile a nemesis SIGKILLs worker main processes and pool
children by PID, SIGKILLs Redis and restarts it, restarts PostgreSQL, and stops
Redis for 10 s while logins go on. After the queue and the outbox drain, every
user's state is checked against the rules. The exit status is 0 when every check
holds (or, with --expect-failure, when at least one fails).

--negative-control turns off the idempotency guard and the sweeper: the run must
then fail, which shows that the checks can see lost and double-applied sign-ins.

Imported by the workers (`--include chaos`) it only installs a probe that appends
one line per task start and end to $QUESTLINE_CHAOS_PROBE, outside any
transaction, to count the duplicate deliveries that the product absorbed.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "chaos-password-1"
PG_SERVER = os.environ.get("QUESTLINE_CHAOS_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")

# --- the probe, loaded into worker processes ----------------------------------


def _install_probe(path: str) -> None:
    from celery import signals

    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def write(line: str) -> None:
        # One write() per line on an O_APPEND file: lines from many processes never mix.
        os.write(fd, line.encode())

    @signals.task_prerun.connect(weak=False)
    def _started(sender: Any = None, args: Any = None, **_kw: Any) -> None:
        name = getattr(sender, "name", "")
        if name == "questline.process_sign_in" and args:
            write(f"start {args[0]} {os.getpid()}\n")
        elif name == "questline.drain_outbox":
            write(f"drain-start 0 {os.getpid()}\n")

    @signals.task_postrun.connect(weak=False)
    def _finished(sender: Any = None, args: Any = None, retval: Any = None, **_kw: Any) -> None:
        name = getattr(sender, "name", "")
        if name == "questline.process_sign_in" and args and isinstance(retval, dict):
            outcome = retval.get("outcome", "?").replace(" ", "-")
            write(f"done {args[0]} {outcome}\n")
        elif name == "questline.drain_outbox" and isinstance(retval, dict):
            write(f"drain-done {retval.get('applied', 0)} -\n")


if __name__ != "__main__" and os.environ.get("QUESTLINE_CHAOS_PROBE"):
    _install_probe(os.environ["QUESTLINE_CHAOS_PROBE"])


# --- processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def log(msg: str, t0: float = 0.0) -> None:
    stamp = f"{time.monotonic() - t0:7.1f}s " if t0 else ""
    print(f"[chaos] {stamp}{msg}", flush=True)


def children_of(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def kill(pid: int, sig: int = signal.SIGKILL) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


class RedisServer:
    """A private redis-server: durable (AOF, fsync always), never evicting."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dir = workdir / "redis"
        self.dir.mkdir()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(workdir / "redis.log", "ab")  # noqa: SIM115

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--maxmemory-policy", "noeviction",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start; see redis.log")

    def _answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        kill(self.proc.pid, sig)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGTERM)


class WorkerSlot:
    """One Celery worker kept alive by a restart loop, like a process supervisor."""

    def __init__(self, slot: int, env: dict[str, str], workdir: Path, concurrency: int) -> None:
        self.slot = slot
        self.env = env
        self.log_path = workdir / f"worker-{slot}.log"
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        with open(self.log_path, "ab") as out:
            return subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "workers", "worker",
                    "--loglevel=INFO", f"--concurrency={self.concurrency}",
                    "--pool=prefork", "--without-gossip", "--without-mingle",
                    "--include=chaos",
                    f"--hostname=chaos{self.slot}-{self.starts}@%h",
                ],
                env=self.env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def _loop(self) -> None:
        while not self.stopping:
            self.proc = self._spawn()
            pool = []
            while self.proc.poll() is None:
                pool = children_of(self.proc.pid) or pool
                time.sleep(0.2)
            # A dead main process takes its pool with it, as a crashed host would.
            for pid in pool:
                kill(pid)
            time.sleep(0.3)

    def start(self) -> None:
        self.thread.start()

    def pool_children(self) -> list[int]:
        return children_of(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            pool = self.pool_children()
            kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                kill(self.proc.pid)
                self.proc.wait(5)
            for pid in pool:
                kill(pid)
        self.thread.join(5)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


# --- the load ------------------------------------------------------------------


@dataclass
class Player:
    name: str
    user_id: int = 0
    target: int = 0
    refresh_token: str | None = None
    access_token: str | None = None
    answered: list[int] = field(default_factory=list)


@dataclass
class Tally:
    """Everything the clients saw, for the checks and the summary."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    # (monotonic time, status) of every sign-in attempt
    attempts: list[tuple[float, str]] = field(default_factory=list)
    republish_queue: list[tuple[float, int, int]] = field(default_factory=list)
    republished: int = 0
    republish_failures: int = 0
    # user_id -> claims answered 200 (effect certain) and ambiguous (no answer / 5xx)
    claims_ok: collections.Counter[int] = field(default_factory=collections.Counter)
    claims_unknown: collections.Counter[int] = field(default_factory=collections.Counter)
    claim_statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    replay_mismatches: list[str] = field(default_factory=list)

    def attempt(self, status: str) -> None:
        with self.lock:
            self.statuses[status] += 1
            self.attempts.append((time.monotonic(), status))


def sign_in(client: Any, player: Player, tally: Tally, rng: random.Random) -> bool:
    """One sign-in: refresh mostly, a password login sometimes or when the session broke."""
    import httpx

    use_login = player.refresh_token is None or rng.random() < 0.05
    try:
        if use_login:
            r = client.post("/auth/login", json={"user_name": player.name, "password": PASSWORD})
        else:
            r = client.post("/auth/refresh", json={"refresh_token": player.refresh_token})
    except httpx.HTTPError as exc:
        tally.attempt(type(exc).__name__)
        # The refresh may have been used even though no answer came back.
        player.refresh_token = None
        return False
    tally.attempt(str(r.status_code))
    if r.status_code != 200:
        player.refresh_token = None
        return False
    body = r.json()
    player.refresh_token = body["refresh_token"]
    player.access_token = body["access_token"]
    player.answered.append(body["sign_in_id"])
    if rng.random() < 0.10:
        with tally.lock:
            tally.republish_queue.append(
                (time.monotonic() + rng.uniform(0, 3), body["sign_in_id"], player.user_id)
            )
    return True


def run_players(
    url: str, players: list[Player], tally: Tally, rate: float, seed: int, stop: threading.Event
) -> None:
    """Sign these players in, round-robin, at about `rate` sign-ins per second."""
    import httpx

    rng = random.Random(seed)
    interval = 1.0 / rate
    next_at = time.monotonic()
    with httpx.Client(base_url=url, timeout=15) as client:
        while not stop.is_set():
            todo = [p for p in players if len(p.answered) < p.target]
            if not todo:
                return
            for player in todo:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if not sign_in(client, player, tally, rng):
                    time.sleep(0.1)


def run_republisher(tally: Tally, stop: threading.Event) -> None:
    """Publish ~10 % of the answered sign-ins a second time, straight to the broker."""
    from workers.tasks import process_sign_in

    while True:
        now = time.monotonic()
        with tally.lock:
            due = [item for item in tally.republish_queue if item[0] <= now]
            tally.republish_queue = [item for item in tally.republish_queue if item[0] > now]
        if not due and stop.is_set() and not tally.republish_queue:
            return
        for _, event_id, user_id in due:
            try:
                process_sign_in.apply_async((event_id,), {"user_id": user_id}, retry=False)
                tally.republished += 1
            except Exception:
                tally.republish_failures += 1
                with tally.lock:  # the broker is away: try again a little later
                    tally.republish_queue.append((time.monotonic() + 1, event_id, user_id))
        time.sleep(0.05)


def run_claimers(
    url: str, players: list[Player], quest_id: int, tally: Tally, stop: threading.Event
) -> None:
    """Bursts of concurrent claims: two with one Idempotency-Key, two with fresh keys."""
    import httpx

    rng = random.Random(7)
    burst = 0
    with httpx.Client(base_url=url, timeout=15) as client:
        while not stop.wait(0.4):
            ready = [p for p in players if p.access_token]
            if not ready:
                continue
            player = rng.choice(ready)
            burst += 1
            shared = f"chaos-{player.user_id}-{burst}"
            keys = [shared, shared, f"{shared}-a", f"{shared}-b"]
            answers: list[Any] = [None] * len(keys)
            barrier = threading.Barrier(len(keys))

            def claim(
                i: int,
                key: str,
                token: str = player.access_token or "",
                barrier: threading.Barrier = barrier,
                answers: list[Any] = answers,
            ) -> None:
                barrier.wait()
                try:
                    answers[i] = client.post(
                        f"/me/quests/{quest_id}/claim",
                        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                    )
                except httpx.HTTPError as exc:
                    answers[i] = exc

            threads = [threading.Thread(target=claim, args=(i, k)) for i, k in enumerate(keys)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            _tally_claims(player.user_id, keys, answers, tally)


def _tally_claims(user_id: int, keys: list[str], answers: list[Any], tally: Tally) -> None:
    by_key: dict[str, list[Any]] = collections.defaultdict(list)
    for key, answer in zip(keys, answers, strict=True):
        by_key[key].append(answer)
        status = str(answer.status_code) if hasattr(answer, "status_code") else "error"
        with tally.lock:
            tally.claim_statuses[status] += 1
    for key, same in by_key.items():
        statuses = {a.status_code if hasattr(a, "status_code") else 599 for a in same}
        if 200 in statuses:
            tally.claims_ok[user_id] += 1
        elif max(statuses) >= 500:
            tally.claims_unknown[user_id] += 1  # no clear answer: the claim may have committed
        answered = [
            (a.status_code, a.json())
            for a in same
            if hasattr(a, "status_code") and a.status_code < 500
        ]
        if any(a != answered[0] for a in answered[1:]):
            tally.replay_mismatches.append(f"{key}: {answered}")


# --- the nemesis ---------------------------------------------------------------


@dataclass
class Faults:
    main_kills: int = 0
    child_kills: int = 0
    redis_kills: int = 0
    redis_stops: int = 0
    pg_restarts: int = 0
    pg_restart_errors: list[str] = field(default_factory=list)
    outage: tuple[float, float] | None = None  # Redis stopped: (from, to), monotonic
    schedule_done: threading.Event = field(default_factory=threading.Event)


def pg_restart() -> str | None:
    """Restart the local PostgreSQL (fast mode); an error message, or None."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if versions and shutil.which("pg_ctlcluster"):
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "restart"]
        cmd += ["-m", "fast"]
    else:
        data = os.environ.get("PGDATA", "")
        cmd = ["pg_ctl", "-D", data, "restart", "-m", "fast", "-w"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return f"{' '.join(cmd)}: {r.stdout} {r.stderr}".strip()
    return None


def run_nemesis(
    slots: list[WorkerSlot],
    redis_server: RedisServer,
    faults: Faults,
    stop: threading.Event,
    t0: float,
    *,
    restart_pg: bool,
    kill_every: float,
    duration: float,
) -> None:
    """Kill workers every couple of seconds; Redis and PostgreSQL faults on a schedule."""
    rng = random.Random(11)
    schedule = [(0.15 * duration, "kill-redis"), (0.6 * duration, "stop-redis")]
    if restart_pg:
        schedule.append((0.4 * duration, "restart-pg"))
    schedule.sort()
    turn = 0
    next_kill = time.monotonic() + kill_every
    while not stop.is_set():
        elapsed = time.monotonic() - t0
        if not schedule:
            faults.schedule_done.set()
        elif elapsed >= schedule[0][0]:
            _, what = schedule.pop(0)
            if what == "kill-redis":
                log("SIGKILL redis-server, restart it", t0)
                redis_server.kill(signal.SIGKILL)
                faults.redis_kills += 1
                time.sleep(1)
                redis_server.start()
            elif what == "restart-pg":
                log("restart PostgreSQL (-m fast)", t0)
                error = pg_restart()
                if error:
                    faults.pg_restart_errors.append(error)
                    log(f"PostgreSQL restart failed: {error}", t0)
                else:
                    faults.pg_restarts += 1
            elif what == "stop-redis":
                log("stop redis-server for 10 s; logins go on", t0)
                start = time.monotonic()
                redis_server.kill(signal.SIGTERM)
                faults.redis_stops += 1
                time.sleep(10)
                faults.outage = (start, time.monotonic())
                redis_server.start()
                log("redis-server is back", t0)
            continue
        if time.monotonic() >= next_kill:
            next_kill = time.monotonic() + kill_every
            slot = slots[turn % len(slots)]
            if turn % 2 == 0 and slot.proc is not None and slot.proc.poll() is None:
                if kill(slot.proc.pid):
                    faults.main_kills += 1
            else:
                pool = slot.pool_children()
                if pool and kill(rng.choice(pool)):
                    faults.child_kills += 1
            turn += 1
        time.sleep(0.05)


# --- checks --------------------------------------------------------------------


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)


def verify(
    engine: Any, players: list[Player], quests: dict[int, dict[str, Any]], tally: Tally
) -> Verdict:
    """Every user's state against the rules, from the database alone."""
    from sqlalchemy import text

    v = Verdict()
    by_id = {p.user_id: p for p in players}
    with engine.connect() as conn:
        stored: dict[int, list[tuple[int, bool]]] = collections.defaultdict(list)
        for event_id, user_id, processed in conn.execute(
            text(
                "SELECT event_id, user_id, processed_at IS NOT NULL FROM events "
                "WHERE type = 'sign_in' ORDER BY event_id"
            )
        ):
            stored[user_id].append((event_id, processed))
        # How often each sign-in advanced each quest: quest_progress events carry it.
        applications: dict[tuple[int, int], int] = {
            (int(sid), qid): n
            for sid, qid, n in conn.execute(
                text(
                    "SELECT data->>'sign_in_id', quest_id, count(*) FROM events "
                    "WHERE type = 'quest_progress' GROUP BY 1, 2"
                )
            )
        }
        progress = {
            (u, q): (s, c)
            for u, q, s, c in conn.execute(
                text("SELECT user_id, quest_id, curr_streak, completions FROM user_quest_progress")
            )
        }
        rewards: dict[tuple[int, int], list[tuple[int, str, str, int]]] = collections.defaultdict(
            list
        )
        for u, q, no, status, item, qty in conn.execute(
            text(
                "SELECT user_id, quest_id, completion_no, status, reward_item, reward_qty "
                "FROM user_rewards"
            )
        ):
            rewards[(u, q)].append((no, status, item, qty))
        wallets = {
            u: (g, d) for u, g, d in conn.execute(text("SELECT user_id, gold, diamond FROM users"))
        }
        pending, dead = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE dead_at IS NULL), "
                "count(*) FILTER (WHERE dead_at IS NOT NULL) FROM events "
                "WHERE type = 'sign_in' AND processed_at IS NULL"
            )
        ).one()

    counter_quest = min(q for q, spec in quests.items() if spec["duplication"] >= 10**6)
    lost = double = over = capped = uncapped = 0
    answered_total = stored_total = 0
    for user_id, player in by_id.items():
        events = stored.get(user_id, [])
        stored_ids = {e for e, _ in events}
        processed_ids = {e for e, done in events if done}
        answered = set(player.answered)
        answered_total += len(answered)
        stored_total += len(events)
        missing = answered - stored_ids
        v.check(not missing, f"user {user_id}: answered sign-ins not stored: {sorted(missing)[:5]}")
        unapplied = [e for e in answered if applications.get((e, counter_quest), 0) == 0]
        lost += len(unapplied) + len(missing)
        twice = [e for e in stored_ids if applications.get((e, counter_quest), 0) > 1]
        double += len(twice)
        v.check(not unapplied, f"user {user_id}: {len(unapplied)} answered sign-ins never applied")
        v.check(not twice, f"user {user_id}: {len(twice)} sign-ins applied more than once")
        n = len(processed_ids)
        wallet = {"gold": 0, "diamond": 0}
        for quest_id, spec in quests.items():
            streak, dup = spec["streak"], spec["duplication"]
            completions = min(dup, n // streak)
            curr = n % streak if n // streak < dup else 0
            got = progress.get((user_id, quest_id), (0, 0))
            v.check(
                got == (curr, completions),
                f"user {user_id} quest {quest_id}: (curr_streak, completions) = {got}, "
                f"the rules say {(curr, completions)} for {n} sign-ins",
            )
            if quest_id != counter_quest:
                if n // streak >= dup:
                    capped += 1
                else:
                    uncapped += 1
            earned = rewards.get((user_id, quest_id), [])
            numbers = sorted(no for no, *_ in earned)
            v.check(
                numbers == list(range(1, got[1] + 1)),
                f"user {user_id} quest {quest_id}: completion numbers {numbers[:10]} "
                f"for {got[1]} completions",
            )
            claimed = [r for r in earned if r[1] == "claimed"]
            over += max(0, len(earned) - completions)
            v.check(len(claimed) <= len(earned), f"user {user_id}: claimed more than earned")
            if spec["auto_claim"]:
                v.check(
                    len(claimed) == len(earned),
                    f"user {user_id} quest {quest_id}: auto-claim reward not credited",
                )
            else:
                ok, unknown = tally.claims_ok[user_id], tally.claims_unknown[user_id]
                v.check(
                    ok <= len(claimed) <= ok + unknown,
                    f"user {user_id} quest {quest_id}: {len(claimed)} rewards claimed, "
                    f"clients saw {ok} claims succeed ({unknown} unanswered)",
                )
            for _, _, item, qty in claimed:
                wallet[item] += qty
        got_wallet = wallets.get(user_id, (0, 0))
        want_wallet = (wallet["gold"], wallet["diamond"])
        if got_wallet != want_wallet:
            over += 1
        v.check(
            got_wallet == want_wallet,
            f"user {user_id}: wallet {got_wallet}, claimed rewards sum to {want_wallet}",
        )
    v.check(pending == 0, f"{pending} sign-ins still pending")
    v.check(dead == 0, f"{dead} sign-ins dead-lettered")
    v.check(
        not tally.replay_mismatches, f"idempotent replays differ: {tally.replay_mismatches[:5]}"
    )
    v.figures.update(
        answered=answered_total,
        stored=stored_total,
        lost=lost,
        double_applied=double,
        over_granted=over,
        pending=pending,
        dead=dead,
        capped_pairs=capped,
        uncapped_pairs=uncapped,
    )
    return v


def probe_counts(path: Path) -> dict[str, int]:
    starts: collections.Counter[int] = collections.Counter()
    outcomes: collections.Counter[str] = collections.Counter()
    drains = drained = 0
    if path.exists():
        for line in path.read_text().splitlines():
            kind, value, extra = (line.split() + ["", "", ""])[:3]
            if kind == "start":
                starts[int(value)] += 1
            elif kind == "done":
                outcomes[extra] += 1
            elif kind == "drain-done":
                drains += 1
                drained += int(value)
    return {
        "task_executions": sum(starts.values()),
        "distinct_events": len(starts),
        "repeat_executions": sum(n - 1 for n in starts.values()),
        "absorbed": outcomes["already-processed"],
        "applied_by_task": outcomes["applied"],
        "drain_tasks": drains,
        "applied_by_drain": drained,
    }


# --- the run -------------------------------------------------------------------


def reset_database(url: str, name: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(f"{url}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    engine.dispose()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.25) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if predicate():
                return time.monotonic() - start
        except Exception:
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, help="default 100 (control: 40)")
    parser.add_argument("--sign-ins", type=int, help="default 10000 (control: 3000)")
    parser.add_argument(
        "--duration", type=float, help="target load time, s (default 60, control 40)"
    )
    parser.add_argument("--negative-control", action="store_true", help="disable the safeguards")
    parser.add_argument("--expect-failure", action="store_true", help="exit 0 only if checks fail")
    parser.add_argument("--no-pg-restart", action="store_true")
    parser.add_argument("--dispatch", choices=["batch", "per_event"], default="batch")
    parser.add_argument("--database", default="questline_chaos")
    parser.add_argument("--drain-timeout", type=float, help="s (default 150, control 40)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    # The control only has to show that the checks see faults: a lighter load will do.
    control = args.negative_control
    for name, full, light in [
        ("users", 100, 40),
        ("sign_ins", 10_000, 3_000),
        ("duration", 60.0, 40.0),
        ("drain_timeout", 150.0, 40.0),
    ]:
        if getattr(args, name) is None:
            setattr(args, name, light if control else full)

    workdir = Path(tempfile.mkdtemp(prefix="questline-chaos-"))
    probe = workdir / "probe.log"
    redis_server = RedisServer(workdir)
    redis_server.start()
    database_url = f"{PG_SERVER}/{args.database}"
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'scripts'}",
        "QUESTLINE_DATABASE_URL": database_url,
        "QUESTLINE_REDIS_URL": redis_server.url,
        "QUESTLINE_DATA_DIR": str(workdir),
        "QUESTLINE_SWEEP_AFTER_SECONDS": "2",
        "QUESTLINE_SWEEP_INTERVAL_SECONDS": "1",
        "QUESTLINE_BROKER_VISIBILITY_TIMEOUT_SECONDS": "45",
        "QUESTLINE_SIGN_IN_DISPATCH": args.dispatch,
        "QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT": "1000000",
        # Password hashing is not under test here; keep its CPU for the faults.
        "QUESTLINE_ARGON2_MEMORY_KIB": "1024",
        "QUESTLINE_ARGON2_TIME_COST": "1",
        "QUESTLINE_CHAOS_PROBE": str(probe),
    }
    if args.negative_control:
        env["QUESTLINE_UNSAFE_DISABLE_IDEMPOTENCY_GUARD"] = "true"
        env["QUESTLINE_SWEEPER_ENABLED"] = "false"
    os.environ.update({k: v for k, v in env.items() if k.startswith("QUESTLINE_")})
    os.environ.pop("QUESTLINE_CHAOS_PROBE")
    sys.path.insert(0, str(ROOT))

    reset_database(PG_SERVER, args.database)
    from questline.infra import db, migrate
    from questline.users import service as users

    migrate.upgrade(database_url)
    with db.transaction() as session:
        users.signup(session, user_name="chaos-admin", password=PASSWORD, role="admin")

    slots: list[WorkerSlot] = []
    api: subprocess.Popen[bytes] | None = None
    verdict = Verdict()
    t_start = time.monotonic()
    try:
        import httpx

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with open(workdir / "api.log", "ab") as out:
            api = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", "2", "--log-level", "warning"],
                env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        wait_for(lambda: httpx.get(f"{url}/healthz").status_code == 200, 60, "the API")
        for i in range(3):
            slots.append(WorkerSlot(i, env, workdir, concurrency=2))
            slots[-1].start()
        wait_for(lambda: all("ready." in s.output() for s in slots), 90, "three workers")

        quests = setup_catalog(url)
        players = setup_players(url, args.users, args.sign_ins)
        log(
            f"{len(players)} players, {sum(p.target for p in players)} sign-ins planned, "
            f"{len(quests)} quests, dispatch={args.dispatch}"
            + (", NEGATIVE CONTROL" if args.negative_control else "")
        )

        tally, faults = Tally(), Faults()
        stop_load, stop_side = threading.Event(), threading.Event()
        t0 = time.monotonic()
        groups = 12
        loaders = [
            threading.Thread(
                target=run_players,
                args=(
                    url,
                    players[g::groups],
                    tally,
                    sum(p.target for p in players[g::groups]) / args.duration,
                    g,
                    stop_load,
                ),
                daemon=True,
            )
            for g in range(groups)
        ]
        side = [
            threading.Thread(target=run_republisher, args=(tally, stop_side), daemon=True),
            threading.Thread(
                target=run_claimers,
                args=(url, players, 1, tally, stop_side),
                daemon=True,
            ),
            threading.Thread(
                target=run_nemesis,
                args=(slots, redis_server, faults, stop_side, t0),
                kwargs={
                    "restart_pg": not args.no_pg_restart and not args.negative_control,
                    "kill_every": 2.0,
                    "duration": args.duration,
                },
                daemon=True,
            ),
        ]
        for t in loaders + side:
            t.start()
        last_report = t0
        while any(t.is_alive() for t in loaders):
            time.sleep(0.5)
            if time.monotonic() - last_report > 10:
                last_report = time.monotonic()
                done = sum(len(p.answered) for p in players)
                log(f"{done} sign-ins answered, statuses {dict(tally.statuses)}", t0)
            if time.monotonic() - t0 > args.duration * 4 + 120:
                stop_load.set()
                verdict.failures.append("load did not finish in time")
        # Let the scheduled faults finish before the drain starts.
        faults.schedule_done.wait(args.duration + 60)
        stop_side.set()
        for t in side:
            t.join(60)
        load_seconds = time.monotonic() - t0
        left_unacked = redis_server.client().hlen("unacked")
        log(f"load done in {load_seconds:.0f} s; waiting for the queue and outbox to drain", t0)

        restarts = sum(s.starts - 1 for s in slots)
        broker = redis_server.client()
        engine = db.get_engine()

        last_drain_report = time.monotonic()

        def drained() -> bool:
            from sqlalchemy import text

            with engine.connect() as conn:
                pending = conn.execute(
                    text(
                        "SELECT count(*) FROM events WHERE type = 'sign_in' "
                        "AND processed_at IS NULL"
                    )
                ).scalar_one()
            left = (pending, broker.llen("sign_ins"), broker.hlen("unacked"))
            nonlocal last_drain_report
            if time.monotonic() - last_drain_report > 10:
                last_drain_report = time.monotonic()
                log(f"pending sign-ins {left[0]}, queued messages {left[1]}, unacked {left[2]}", t0)
            return left == (0, 0, 0)

        try:
            drain_seconds: float | None = wait_for(drained, args.drain_timeout, "the drain", 0.5)
        except TimeoutError as exc:
            drain_seconds = None
            verdict.failures.append(str(exc))
        log("drained" if drain_seconds is not None else "did not drain", t0)

        checked = verify(engine, players, quests, tally)
        verdict.failures += checked.failures
        verdict.figures.update(checked.figures)
        counts = probe_counts(probe)
        sweeper_applied = sum(
            int(n) for s in slots for n in re.findall(r"sweeper applied (\d+) stale", s.output())
        )
        outage_failures = 0
        if faults.outage is not None:
            lo, hi = faults.outage
            outage_attempts = [s for t, s in tally.attempts if lo <= t <= hi]
            outage_failures = sum(1 for s in outage_attempts if s != "200")
            verdict.check(
                outage_failures == 0 and bool(outage_attempts),
                f"{outage_failures} of {len(outage_attempts)} sign-ins failed while Redis was down",
            )
        verdict.check(not faults.pg_restart_errors, "PostgreSQL could not be restarted")
        verdict.figures.update(
            counts,
            republished=tally.republished,
            left_unacked=left_unacked,
            main_kills=faults.main_kills,
            child_kills=faults.child_kills,
            worker_restarts=restarts,
            redis_kills=faults.redis_kills,
            redis_stops=faults.redis_stops,
            pg_restarts=faults.pg_restarts,
            sweeper_applied=sweeper_applied,
            outage_sign_ins=sum(
                1
                for t, _ in tally.attempts
                if faults.outage and faults.outage[0] <= t <= faults.outage[1]
            ),
            outage_failures=outage_failures,
            http_statuses=dict(tally.statuses),
            claim_statuses=dict(tally.claim_statuses),
            claims_ok=sum(tally.claims_ok.values()),
            load_seconds=round(load_seconds, 1),
            drain_seconds=None if drain_seconds is None else round(drain_seconds, 1),
        )
    except Exception as exc:
        verdict.failures.append(f"the run broke: {type(exc).__name__}: {exc}")
    finally:
        for s in slots:
            s.stop()
        if api is not None:
            kill(api.pid, signal.SIGTERM)
            try:
                api.wait(20)
            except subprocess.TimeoutExpired:
                kill(api.pid)
        redis_server.stop()

    summary(verdict, args, time.monotonic() - t_start, workdir)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = bool(verdict.failures)
    if args.expect_failure:
        print("expected the checks to fail:", "they did" if failed else "THEY PASSED")
        return 0 if failed else 1
    return 1 if failed else 0


def setup_catalog(url: str) -> dict[int, dict[str, Any]]:
    """The seed quest plus an auto-claim quest that some players cap and some do not, and an
    auto-claim counter quest (streak 1, no practical cap) that records every application."""
    import httpx

    with httpx.Client(base_url=url, timeout=30) as c:
        r = c.post("/auth/login", json={"user_name": "chaos-admin", "password": PASSWORD})
        r.raise_for_status()
        h = {"Authorization": f"Bearer {r.json()['access_token']}"}
        specs = [
            ("Five Gold", "gold", 5, "seven-day-streak", 7, 10),
            ("One Gold", "gold", 1, "every-sign-in", 1, 1_000_000),
        ]
        for reward_name, item, qty, name, streak, dup in specs:
            r = c.post(
                "/rewards",
                headers=h,
                json={"reward_name": reward_name, "reward_item": item, "reward_qty": qty},
            )
            r.raise_for_status()
            r = c.post(
                "/quests",
                headers=h,
                json={
                    "name": name,
                    "description": "chaos run",
                    "auto_claim": True,
                    "streak": streak,
                    "duplication": dup,
                    "reward_id": r.json()["reward_id"],
                },
            )
            r.raise_for_status()
        r = c.get("/quests", headers=h)
        r.raise_for_status()
        return {q["quest_id"]: q for q in r.json()}


def setup_players(url: str, count: int, sign_ins: int) -> list[Player]:
    """Players with sign-in targets spread from 0.4x to 1.6x the mean, summing to sign_ins."""
    import httpx

    mean = sign_ins / count
    players = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(count):
            p = Player(name=f"hero{i:04d}")
            r = c.post("/auth/signup", json={"user_name": p.name, "password": PASSWORD})
            r.raise_for_status()
            p.user_id = r.json()["user_id"]
            p.target = int(mean * (0.4 + 1.2 * ((i * 37) % count) / max(1, count - 1)))
            players.append(p)
    short = sign_ins - sum(p.target for p in players)
    for i in range(max(0, short)):
        players[i % count].target += 1
    return players


def summary(verdict: Verdict, args: argparse.Namespace, seconds: float, workdir: Path) -> None:
    f = verdict.figures
    rows = [
        ("mode", "NEGATIVE CONTROL" if args.negative_control else f"normal ({args.dispatch})"),
        ("players", args.users),
        ("sign-ins answered 200", f.get("answered")),
        ("sign-ins stored", f.get("stored")),
        ("re-published to the broker", f.get("republished")),
        ("process_sign_in executions", f.get("task_executions")),
        ("  of which repeats of an event", f.get("repeat_executions")),
        ("  absorbed (already processed)", f.get("absorbed")),
        ("drain_outbox tasks finished / applied",
         f"{f.get('drain_tasks')} / {f.get('applied_by_drain')}"),
        ("applied by the sweeper", f.get("sweeper_applied")),
        ("messages redelivered after kills", f.get("left_unacked")),
        ("SIGKILL worker main / pool child", f"{f.get('main_kills')} / {f.get('child_kills')}"),
        ("worker restarts", f.get("worker_restarts")),
        ("Redis SIGKILL / 10 s stop", f"{f.get('redis_kills')} / {f.get('redis_stops')}"),
        ("PostgreSQL restarts", f.get("pg_restarts")),
        ("sign-ins during Redis stop / failed", f"{f.get('outage_sign_ins')} / "
         f"{f.get('outage_failures')}"),
        ("(user, quest) capped / not capped", f"{f.get('capped_pairs')} / "
         f"{f.get('uncapped_pairs')}"),
        ("claims succeeded", f.get("claims_ok")),
        ("LOST", f.get("lost")),
        ("DOUBLE-APPLIED", f.get("double_applied")),
        ("OVER-GRANTED", f.get("over_granted")),
        ("pending / dead", f"{f.get('pending')} / {f.get('dead')}"),
        ("load time, s", f.get("load_seconds")),
        ("time to drain, s", f.get("drain_seconds")),
        ("total run time, s", round(seconds, 1)),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print("\n" + "=" * (width + 24))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"{'http statuses':<{width}}  {f.get('http_statuses')}")
    print(f"{'claim statuses':<{width}}  {f.get('claim_statuses')}")
    print("=" * (width + 24))
    if verdict.failures:
        print(f"FAILED: {len(verdict.failures)} check(s)")
        for msg in verdict.failures[:25]:
            print("  -", msg)
        if len(verdict.failures) > 25:
            print(f"  ... and {len(verdict.failures) - 25} more")
    else:
        print("PASSED: nothing lost, nothing applied twice, nothing granted beyond the rules")
    if args.keep:
        print(f"logs in {workdir}")


if __name__ == "__main__":
    sys.exit(main())
