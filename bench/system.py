"""The system under test and its data: the scratch database (sign-ins, users, refresh
tokens, exactness checks), and the Questline processes each measurement starts."""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg2

import harness

PASSWORD = "bench-password-123"


@dataclass
class Bench:
    """The scratch database and Redis of a run, and how to start processes on them."""

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
        return harness.child_env(self.env, overrides)

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
            "TRUNCATE wallet_ledger, wallets, user_rewards, user_quest_periods, "
            "user_quest_progress, idempotency_keys, refresh_tokens, events, users "
            "RESTART IDENTITY CASCADE"
        )
        import redis

        redis.Redis.from_url(self.redis_url).flushdb()

    def make_users(self, n: int) -> None:
        from questline import security

        password_hash = security.hash_password(PASSWORD)
        self.sql(
            "INSERT INTO users (user_name, password_hash, status, role, created_at) "
            "SELECT 'player' || g, %s, 'not_new', 'player', now() "
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
            "INSERT INTO events (user_id, type, data, created_at, occurred_at, tz, value, "
            "attempts) SELECT 1 + (g %% %s), 'sign_in', '{\"via\": \"bench\"}', now(), now(), "
            "'UTC', 1, 0 "
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
        # the streak (the progress of its one period, ""), and one progress event per
        # sign-in until the cap.
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
            LEFT JOIN user_quest_periods pp
                   ON pp.user_id = e.user_id AND pp.quest_id = 1 AND pp.period_key = ''
            LEFT JOIN r ON r.user_id = e.user_id
            LEFT JOIN h ON h.user_id = e.user_id
            WHERE coalesce(p.completions, 0) <> e.c
               OR coalesce(pp.progress, 0)
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

    def celery_worker(self, app: str, concurrency: int, **env: str) -> harness.Process:
        """A worker logging warnings only (a line per task would cost the run); ready
        once wait_worker_ready says so."""
        args = harness.worker_args(
            name="bench", app=app, concurrency=concurrency, loglevel="WARNING"
        )
        return harness.Process(
            args, self.child_env(**env), harness.log_path(self.data_dir, "worker")
        )

    def api(self, app: str, workers: int, **env: str) -> harness.Server:
        """uvicorn with `workers` processes, no access log, once it listens."""
        server = harness.Server(
            app,
            self.child_env(**env),
            self.data_dir,
            name="api",
            options=["--workers", str(workers), "--no-access-log", "--log-level", "warning"],
        )
        try:
            server.wait_ready(path=None, timeout=30)
        except BaseException:
            server.stop()
            raise
        time.sleep(0.5 * workers)  # let every uvicorn worker finish importing
        return server


def wait_worker_ready(celery_app: Any, worker: harness.Process) -> None:
    def ready() -> bool:
        if not worker.alive():
            raise RuntimeError(f"worker exited:\n{worker.output()}")
        return bool(celery_app.control.ping(timeout=0.3))

    harness.wait_until(ready, 60, "the worker to answer a ping")
