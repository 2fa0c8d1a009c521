"""Test infrastructure: the test database and Redis, live servers and worker processes.

Tests use their own PostgreSQL database (questline_test) and Redis db 15, never
shared state; the worker tests that run on RabbitMQ too use a virtual host named like
the database. Point elsewhere with QUESTLINE_TEST_PG (a server URL without a
database), QUESTLINE_TEST_DB_NAME, QUESTLINE_TEST_REDIS and QUESTLINE_TEST_RABBITMQ.
Starting and stopping processes is the harness's (harness/), shared with the chaos
run and the benchmark.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness
from harness import ROOT, children_of, free_port, port_open, send_signal, wait_until

__all__ = ["ROOT", "children_of", "free_port", "port_open", "send_signal", "wait_until"]

PG_SERVER = os.environ.get("QUESTLINE_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
TEST_DB = os.environ.get("QUESTLINE_TEST_DB_NAME", "questline_test")
DATABASE_URL = f"{PG_SERVER}/{TEST_DB}"
REDIS_URL = os.environ.get("QUESTLINE_TEST_REDIS", "redis://127.0.0.1:6379/15")
# The worker tests that run on both brokers use the machine's RabbitMQ with a virtual
# host of the test run's own, named like its database; created when missing.
RABBITMQ_URL = os.environ.get(
    "QUESTLINE_TEST_RABBITMQ", f"amqp://guest:guest@127.0.0.1:5672/{TEST_DB}"
)
DATA_DIR = Path(tempfile.mkdtemp(prefix="questline-test-"))

START_PG = (
    "start PostgreSQL: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
)
START_REDIS = (
    'start Redis: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" '
    "--appendonly no"
)

# What every process under test reads: the app in this process, workers and servers.
# The sweeper's timing can be set from outside, e.g. QUESTLINE_SWEEP_AFTER_SECONDS=0.2
# to stand in for a machine five times slower than this one.
TEST_ENV = {
    "QUESTLINE_DATABASE_URL": DATABASE_URL,
    "QUESTLINE_REDIS_URL": REDIS_URL,
    "QUESTLINE_DATA_DIR": str(DATA_DIR),
    "QUESTLINE_SWEEP_AFTER_SECONDS": os.environ.get("QUESTLINE_SWEEP_AFTER_SECONDS", "1"),
    "QUESTLINE_SWEEP_INTERVAL_SECONDS": os.environ.get("QUESTLINE_SWEEP_INTERVAL_SECONDS", "0.5"),
    "QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT": "1000",
    # Live streams: a heartbeat every second lets a test's reader notice a close at once.
    "QUESTLINE_STREAM_HEARTBEAT_SECONDS": "1",
    "QUESTLINE_STREAM_RECHECK_SECONDS": "1",
}


def child_env(**overrides: str) -> dict[str, str]:
    return harness.child_env(TEST_ENV, overrides)


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
        wait_until(lambda: self.server.started, 60, "the test server to start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(5)


class Process(harness.Process):
    """A child process (worker, server) with its output in a log file of the test run."""

    def __init__(self, args: list[str], env: Mapping[str, str], name: str) -> None:
        super().__init__(args, env, harness.log_path(DATA_DIR, name))


def start_worker(
    concurrency: int = 2, name: str = "worker", queues: str | None = None, **env: str
) -> harness.Process:
    """A real Celery worker process (prefork pool) on the test broker and database, once
    it is ready; `queues` (comma-separated) limits what it consumes."""
    return harness.start_worker(
        child_env(**env), DATA_DIR, name=name, concurrency=concurrency, queues=queues
    )


def start_server(
    app: str, port: int | None = None, name: str = "server", **env: str
) -> harness.Server:
    """uvicorn in its own process, for tests that need a separate configuration."""
    return harness.start_server(app, child_env(**env), DATA_DIR, name=name, port=port)


def start_grpc_server(
    port: int | None = None, metrics_port: int | None = None, name: str = "grpc", **env: str
) -> harness.GrpcServer:
    """`questline grpc` in its own process on the test database and Redis, once serving."""
    return harness.start_grpc_server(
        child_env(**env), DATA_DIR, name=name, port=port, metrics_port=metrics_port
    )


@contextmanager
def worker_running(**kwargs: Any) -> Iterator[harness.Process]:
    with start_worker(**kwargs) as worker:
        yield worker


class Broker:
    """A broker the worker tests run on: what processes on it need in their environment
    (`env`), and a Celery app in this process that publishes to it (`app`)."""

    def __init__(self, name: str, url: str | None) -> None:
        self.name = name
        self.url = url
        # Redis: the suite's own configuration (QUESTLINE_REDIS_URL is the broker).
        self.env: dict[str, str] = {"QUESTLINE_BROKER_URL": url} if url else {}
        self._app: Any = None

    @property
    def app(self) -> Any:
        """workers.celery_app's app on Redis; on RabbitMQ the same configuration with
        the broker part of workers.broker for this URL (quorum queues and all)."""
        if self._app is None:
            if self.url is None:
                from workers.celery_app import app

                self._app = app
            else:
                self._app = harness.celery_app_for(self.url)
        return self._app

    def send(self, task: str, *args: Any, **options: Any) -> None:
        """Publish task `task` (a name such as questline.process_sign_in) with `args`."""
        self.app.send_task(task, args, **options)

    def close(self) -> None:
        if self._app is not None and self.url is not None:
            self._app.close()

    def __repr__(self) -> str:
        return self.name


START_RABBITMQ = harness.START_RABBITMQ


def rabbitmq_broker() -> Broker:
    """RabbitMQ, with the run's virtual host created if missing and Questline's queues
    emptied of what an earlier run left; BrokerUnavailable saying what to start."""
    from workers.broker import QUEUE_NAMES

    harness.ensure_vhost(RABBITMQ_URL)
    harness.purge_queues(RABBITMQ_URL, [*QUEUE_NAMES, *TEST_QUEUES])
    return Broker("rabbitmq", RABBITMQ_URL)


# Queues of their own that tests start workers on (emptied at the start of a run).
TEST_QUEUES = ("kill-test", "retry-test", "metrics-test", "prune-test")


class SuiteWorker:
    """The worker most tests share. It starts when a test first needs it and runs
    until a test that needs sign-ins to stay pending stops it (its sweeper applies
    any sign-in older than QUESTLINE_SWEEP_AFTER_SECONDS, however fast the machine);
    the next test that needs a worker starts it again."""

    started: list[SuiteWorker] = []  # every one ever started (no_worker stops them all)

    def __init__(self, name: str = "suite", env: Mapping[str, str] | None = None) -> None:
        self.process: harness.Process | None = None
        self.name = name
        self.env = dict(env or {})

    def running(self) -> harness.Process:
        if self.process is not None:
            # A crash must fail the test that sees it, not be papered over by a restart.
            assert self.process.alive(), f"the suite worker exited:\n{self.process.output()}"
            return self.process
        self.process = start_worker(name=self.name, **self.env)
        if self not in SuiteWorker.started:
            SuiteWorker.started.append(self)
        return self.process

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None
