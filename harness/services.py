"""The system's own processes, started the way an operator would: Celery workers,
uvicorn API servers, a private redis-server, and a scratch PostgreSQL database."""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from harness.processes import Process, free_port, log_path, port_open, wait_until

PY = sys.executable


# --- Celery workers ------------------------------------------------------------------


def worker_args(
    *,
    name: str,
    app: str = "workers",
    concurrency: int = 2,
    queues: str | None = None,
    loglevel: str = "INFO",
    include: str | None = None,
) -> list[str]:
    """`celery worker` as the product runs it: prefork pool, no gossip or mingle; `name`
    becomes a unique host name, `queues` (comma-separated) limits what it consumes."""
    return [
        PY, "-m", "celery", "-A", app, "worker",
        f"--loglevel={loglevel}",
        f"--concurrency={concurrency}",
        "--pool=prefork",
        "--without-gossip",
        "--without-mingle",
        *([f"--include={include}"] if include else []),
        f"--hostname={name}-{time.monotonic_ns()}@%h",
        *([f"--queues={queues}"] if queues else []),
    ]  # fmt: skip


def wait_worker_ready(worker: Process, timeout: float = 60) -> None:
    """Until the worker logs "ready." (it needs --loglevel=INFO); its log if it exits."""
    wait_until(
        lambda: "ready." in worker.output() or not worker.alive(), timeout, "the worker to be ready"
    )
    if not worker.alive():
        raise RuntimeError(f"worker exited:\n{worker.output()}")


def start_worker(env: Mapping[str, str], log_dir: Path, *, name: str, **args: Any) -> Process:
    """A Celery worker (see worker_args), once it is ready."""
    worker = Process(worker_args(name=name, **args), env, log_path(log_dir, name))
    try:
        wait_worker_ready(worker)
    except BaseException:
        worker.stop()
        raise
    return worker


# --- API servers -----------------------------------------------------------------------


class Server(Process):
    """uvicorn serving `app` on 127.0.0.1:port."""

    def __init__(
        self,
        app: str,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str,
        port: int | None = None,
        options: Sequence[str] = (),
    ) -> None:
        self.app = app
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(self.port)]
        args.append("--no-server-header")  # as every deployment runs it
        super().__init__([*args, *options], env, log_path(log_dir, name))

    def wait_ready(self, path: str | None = "/healthz", timeout: float = 60) -> None:
        """Until GET `path` answers 200 (or, with path None, the port accepts
        connections); the server's log if it exits first."""
        import httpx

        def ready() -> bool:
            if not self.alive():
                return True
            if path is None:
                return port_open("127.0.0.1", self.port, timeout=0.5)
            try:
                return httpx.get(f"{self.url}{path}", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout, f"{self.app} to answer")
        if not self.alive():
            raise RuntimeError(f"{self.app} exited:\n{self.output()}")


def start_server(
    app: str, env: Mapping[str, str], log_dir: Path, *, name: str, **kwargs: Any
) -> Server:
    """uvicorn serving `app` (see Server), once /healthz answers."""
    server = Server(app, env, log_dir, name=name, **kwargs)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


# --- the gRPC server --------------------------------------------------------------------


class GrpcServer(Process):
    """`questline grpc` on 127.0.0.1:port, its /metrics on metrics_port."""

    def __init__(
        self,
        env: Mapping[str, str],
        log_dir: Path,
        *,
        name: str = "grpc",
        port: int | None = None,
        metrics_port: int | None = None,
    ) -> None:
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.target = f"127.0.0.1:{self.port}"
        args = [PY, "-m", "questline.commands.cli", "grpc", "--port", str(self.port)]
        args += ["--metrics-port", str(self.metrics_port)]
        super().__init__(args, env, log_path(log_dir, name))

    def serving(self) -> bool:
        """The standard health service answers SERVING."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(self.target) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=1
                )
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def wait_ready(self, timeout: float = 60) -> None:
        wait_until(lambda: not self.alive() or self.serving(), timeout, "questline grpc to serve")
        if not self.alive():
            raise RuntimeError(f"questline grpc exited:\n{self.output()}")


def start_grpc_server(env: Mapping[str, str], log_dir: Path, **kwargs: Any) -> GrpcServer:
    """`questline grpc` (see GrpcServer), once its health service says SERVING."""
    server = GrpcServer(env, log_dir, **kwargs)
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server


# --- Redis -------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server on a free port, never evicting. `durable` keeps an
    append-only file synced on every write, so a SIGKILL loses nothing acknowledged;
    start() after kill() brings the same data back."""

    def __init__(self, workdir: Path, *, durable: bool = False) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = workdir / f"redis-{self.port}"
        self.dir.mkdir(parents=True)
        self.log_path = workdir / "redis.log"
        self.durable = durable
        self.proc: Process | None = None

    def start(self, timeout: float = 20) -> RedisServer:
        if self.durable:
            persistence = ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            persistence = ["--appendonly", "no"]
        args = [
            "redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
            "--dir", str(self.dir), "--save", "", "--maxmemory-policy", "noeviction",
            *persistence,
        ]  # fmt: skip
        self.proc = Process(args, os.environ, self.log_path, cwd=self.dir)
        wait_until(
            lambda: self.answers() or not self.proc or not self.proc.alive(),
            timeout,
            "redis-server to answer",
        )
        if not self.answers():
            raise RuntimeError(f"redis-server did not start:\n{self.proc.output()}")
        return self

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal redis-server and wait for it to exit (SIGTERM: a clean shutdown)."""
        assert self.proc is not None
        self.proc.kill(sig)
        self.proc.wait(30)
        self.proc.stop()

    def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            self.kill(signal.SIGTERM)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- PostgreSQL ---------------------------------------------------------------------------

# The test suite's databases (questline_test, questline_test_*): a run must never wipe them.
TEST_DATABASE = re.compile(r"questline_test", re.IGNORECASE)
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def scratch_database(name: str) -> str:
    """`name`, checked as a database that a run may drop and create again."""
    if not DATABASE_NAME.fullmatch(name):
        raise SystemExit(f"{name!r} is not a plain PostgreSQL database name")
    if TEST_DATABASE.match(name):
        raise SystemExit(f"{name!r} belongs to the test suite; choose another database")
    return name


def recreate_database(pg_server: str, name: str) -> str:
    """Drop and create the scratch database `name` on pg_server (a URL without a
    database); its URL."""
    import sqlalchemy as sa

    scratch_database(name)
    engine = sa.create_engine(f"{pg_server}/postgres", isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    finally:
        engine.dispose()
    return f"{pg_server}/{name}"
