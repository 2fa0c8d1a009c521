"""Test infrastructure: the test database and Redis, live servers and worker processes.

Tests use their own PostgreSQL database (questline_test) and Redis db 15, never
shared state. Point elsewhere with QUESTLINE_TEST_PG (a server URL without a
database) and QUESTLINE_TEST_REDIS.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
PG_SERVER = os.environ.get("QUESTLINE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
TEST_DB = os.environ.get("QUESTLINE_TEST_DB_NAME", "questline_test")
DATABASE_URL = f"{PG_SERVER}/{TEST_DB}"
REDIS_URL = os.environ.get("QUESTLINE_TEST_REDIS", "redis://127.0.0.1:6379/15")
DATA_DIR = Path(tempfile.mkdtemp(prefix="questline-test-"))

START_PG = (
    "start PostgreSQL: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)
START_REDIS = (
    'start Redis: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
    "--appendonly no"
)

# What every process under test reads: the app in this process, workers and servers.
TEST_ENV = {
    "QUESTLINE_DATABASE_URL": DATABASE_URL,
    "QUESTLINE_REDIS_URL": REDIS_URL,
    "QUESTLINE_DATA_DIR": str(DATA_DIR),
    "QUESTLINE_SWEEP_AFTER_SECONDS": "1",
    "QUESTLINE_SWEEP_INTERVAL_SECONDS": "0.5",
    "QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT": "1000",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def child_env(**overrides: str) -> dict[str, str]:
    env = {**os.environ, **TEST_ENV, **overrides}
    env["PYTHONPATH"] = str(ROOT)
    return env


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class LiveServer:
    """uvicorn serving an ASGI app on a free port, in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", server_header=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        wait_until(lambda: self.server.started, 10, "the test server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


class Process:
    """A child process (worker, server) with its output in a log file."""

    def __init__(self, args: list[str], env: dict[str, str], name: str) -> None:
        self.log_path = DATA_DIR / f"{name}-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
                self.proc.wait(timeout)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(5)
        self.log.close()


def start_worker(
    concurrency: int = 2, name: str = "worker", queues: str | None = None, **env: str
) -> Process:
    """A real Celery worker process (prefork pool) on the test broker and database;
    `queues` (comma-separated) limits what it consumes."""
    worker = Process(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "--loglevel=INFO",
            f"--concurrency={concurrency}",
            "--pool=prefork",
            "--without-gossip",
            "--without-mingle",
            f"--hostname={name}-{time.monotonic_ns()}@%h",
            *([f"--queues={queues}"] if queues else []),
        ],
        child_env(**env),
        name,
    )
    wait_until(
        lambda: "ready." in worker.output() or not worker.alive(), 60, "the worker to be ready"
    )
    assert worker.alive(), f"worker exited:\n{worker.output()}"
    return worker


def start_server(app: str, port: int | None = None, name: str = "server", **env: str) -> Process:
    """uvicorn in its own process, for tests that need a separate configuration."""
    port = port or free_port()
    proc = Process(
        [
            *(sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port)),
            "--no-server-header",  # as every deployment runs it
        ],
        child_env(**env),
        name,
    )
    proc.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]

    def ready() -> bool:
        if not proc.alive():
            return True
        try:
            return httpx.get(f"{proc.url}/healthz", timeout=1).status_code == 200  # type: ignore[attr-defined]
        except httpx.HTTPError:
            return False

    wait_until(ready, 30, f"{app} to answer")
    assert proc.alive(), f"{app} exited:\n{proc.output()}"
    return proc


@contextmanager
def worker_running(**kwargs: Any) -> Iterator[Process]:
    worker = start_worker(**kwargs)
    try:
        yield worker
    finally:
        worker.stop()
