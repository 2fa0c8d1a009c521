"""The system's own processes, started the way an operator would: Celery workers,
uvicorn API servers, a private redis-server, and a scratch PostgreSQL database."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
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


# --- RabbitMQ ------------------------------------------------------------------------------

START_RABBITMQ = "start RabbitMQ: rabbitmq-server -detached (then rabbitmq-diagnostics -q ping)"


class BrokerUnavailable(RuntimeError):
    """RabbitMQ cannot be reached or set up; the message says what to start or fix."""


def amqp_connect(url: str, timeout: float = 5) -> Any:
    """An open kombu connection to `url` (one attempt: connect and handshake)."""
    from kombu.connection import Connection

    connection = Connection(url, connect_timeout=timeout)
    try:
        connection.connect()
    except BaseException:
        connection.collect()
        raise
    return connection


def amqp_answers(url: str, timeout: float = 2) -> bool:
    try:
        amqp_connect(url, timeout).release()
        return True
    except Exception:
        return False


def rabbitmqctl(*args: str, timeout: float = 60) -> str:
    """rabbitmqctl on the machine's node; its output (BrokerUnavailable if it fails)."""
    try:
        r = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BrokerUnavailable(f"rabbitmqctl {' '.join(args)}: {exc}; {START_RABBITMQ}") from exc
    if r.returncode != 0:
        raise BrokerUnavailable(
            f"rabbitmqctl {' '.join(args)} failed: {r.stdout} {r.stderr}".strip()
        )
    return r.stdout


def ensure_vhost(url: str) -> None:
    """Make `url` usable on the machine's RabbitMQ: when its virtual host does not exist
    yet, create it and give the URL's user every right on it (rabbitmqctl). Raises
    BrokerUnavailable, saying what to start, when RabbitMQ does not answer at all."""
    from amqp.exceptions import AccessRefused, NotAllowed
    from kombu.connection import Connection

    try:
        amqp_connect(url).release()
        return
    except (NotAllowed, AccessRefused):
        pass  # the vhost is missing (or guest may not use it): set it up below
    except Exception as exc:
        raise BrokerUnavailable(
            f"RabbitMQ does not answer at {_safe(url)} ({type(exc).__name__}: {exc}); "
            f"{START_RABBITMQ}"
        ) from exc
    info = Connection(url)
    vhost, user = info.virtual_host or "/", info.userid or "guest"
    existing = rabbitmqctl("list_vhosts", "-q", "--no-table-headers").split()
    if vhost not in existing:
        rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
    try:
        amqp_connect(url).release()
    except Exception as exc:
        raise BrokerUnavailable(
            f"{_safe(url)} still refused after setting up {vhost!r}: {exc}"
        ) from exc


def purge_queues(url: str, names: Sequence[str]) -> dict[str, int]:
    """Empty the named queues that exist on `url`; how many messages each held."""
    from amqp.exceptions import NotFound

    purged: dict[str, int] = {}
    connection = amqp_connect(url)
    try:
        for name in names:
            channel = connection.channel()
            try:
                channel.queue_declare(name, passive=True)
                purged[name] = int(channel.queue_purge(name) or 0)
            except NotFound:
                pass  # passive declare of a missing queue closes the channel
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    finally:
        connection.release()
    return purged


def queue_depths(url: str, names: Sequence[str]) -> dict[str, tuple[int, int]]:
    """(ready, consumers) of each named queue that exists on `url`. A quorum queue's
    ready count leaves out the messages delivered and not yet acknowledged."""
    from amqp.exceptions import NotFound

    depths: dict[str, tuple[int, int]] = {}
    connection = amqp_connect(url)
    try:
        for name in names:
            channel = connection.channel()
            try:
                _, ready, consumers = channel.queue_declare(name, passive=True)
                depths[name] = (int(ready), int(consumers))
            except NotFound:
                pass
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    finally:
        connection.release()
    return depths


def celery_app_for(broker_url: str) -> Any:
    """A Celery app with Questline's configuration (celeryconfig.py) on another broker
    than this process's own: for tools that publish to RabbitMQ while their own
    settings name Redis. Its queue declarations match the workers' on that broker."""
    from celery import Celery

    from questline.config import get_settings
    from workers import broker

    app = Celery(f"questline-{broker.kind_of(broker_url)}")
    app.config_from_object("celeryconfig")
    settings = get_settings().model_copy(update={"broker_url": broker_url})
    app.conf.update(broker.celery_settings(settings))
    return app


def _safe(url: str) -> str:
    """`url` without its password."""
    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


def _rabbitmq_tool(name: str) -> str:
    # Debian's /usr/sbin wrappers switch to the rabbitmq user and the system node's
    # files; the scripts they wrap run (and reach) a node of our own as whoever we are.
    path = f"/usr/lib/rabbitmq/bin/{name}"
    if os.access(path, os.X_OK):
        return path
    found = shutil.which(name)
    if found is None:
        raise BrokerUnavailable(f"{name} is not installed (apt-get install rabbitmq-server)")
    return found


class RabbitMQServer:
    """A private RabbitMQ node on free ports, with its own node name, data directory,
    configuration and Erlang cookie, for runs that kill the broker: the machine's node
    is never touched. Quorum queues and every message the node confirmed are on disk,
    so start() after kill() brings them back. Takes ~10 s to start and ~150 MB."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"questline{self.port}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}//"
        self.dir = workdir / f"rabbitmq-{self.port}"
        self.dir.mkdir(parents=True)
        self.log_path = workdir / "rabbitmq.log"
        (self.dir / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "log.console = true\n"
            "log.console.level = warning\n"
            "log.file = false\n"
        )
        (self.dir / "enabled_plugins").write_text("[].\n")
        (self.dir / "rabbitmq-env.conf").write_text("")  # not the machine's
        self.proc: Process | None = None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "HOME": str(self.dir),  # the Erlang cookie of this node
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONF_ENV_FILE": str(self.dir / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(self.dir / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.dir / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(self.dir / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.dir / "log"),
            "RABBITMQ_PID_FILE": str(self.dir / "rabbitmq.pid"),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def start(self, timeout: float = 120) -> RabbitMQServer:
        self.proc = Process(
            [_rabbitmq_tool("rabbitmq-server")], self.env(), self.log_path, cwd=self.dir
        )
        wait_until(
            lambda: self.answers() or not self.proc or not self.proc.alive(),
            timeout,
            "the RabbitMQ node to answer",
            interval=0.25,
        )
        if not self.answers():
            raise BrokerUnavailable(f"rabbitmq-server did not start:\n{self.proc.output()[-3000:]}")
        return self

    def answers(self) -> bool:
        return amqp_answers(self.url)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """rabbitmqctl on this node; its output (BrokerUnavailable if it fails)."""
        r = subprocess.run(
            [_rabbitmq_tool("rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise BrokerUnavailable(f"rabbitmqctl {' '.join(args)}: {r.stdout} {r.stderr}")
        return r.stdout

    def queue_counts(self) -> dict[str, tuple[int, int]]:
        """(ready, unacknowledged) messages of every queue on the node's default vhost."""
        out = self.ctl(
            "list_queues", "-q", "--no-table-headers", "name", "messages_ready",
            "messages_unacknowledged",
        )  # fmt: skip
        counts: dict[str, tuple[int, int]] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3:
                counts[parts[0]] = (int(parts[1]), int(parts[2]))
        return counts

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the node (the script and the Erlang VM under it) and wait for it to
        exit; SIGKILL is a crash, SIGTERM a clean shutdown."""
        assert self.proc is not None
        self.proc.stop(sig, timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.alive():
            self.kill(signal.SIGTERM)

    def __enter__(self) -> RabbitMQServer:
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
