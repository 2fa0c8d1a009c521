"""`questline serve`: the embedded default, with no other service to install or start.

One command runs the all-in-one app (uvicorn, in this process) and two Celery
workers (child processes that this process starts, restarts and stops), on SQLite
files in the data dir: questline.db for the data, broker.db for the messages. One
worker applies events (queues sign_ins and questline), the other sends webhooks
(queue webhooks) from a pool of threads, so a receiver that hangs for its 5 s holds
up neither a sign-in nor (up to the per-endpoint cap) another receiver.

Why a child worker on kombu's SQLAlchemy transport rather than a worker thread on
the in-memory transport: it is the production path unchanged (`celery -A workers
worker`, the same task, acks, retries and outbox sweeper), Celery's worker wants
the main thread and its own signal handling, and a broker file survives restarts
the way Redis does. The transport polls every 0.1 s (workers/embedded_broker.py),
so a sign-in is applied within a few hundred milliseconds. The `solo` pool runs
one task at a time, which is all SQLite allows anyway: every write transaction
takes the database's write lock up front (questline.infra.db), so the app's requests
and the worker never interleave a read-modify-write. Messages lost in a crash
are harmless: the sign-ins are in the outbox, and the worker's sweeper applies
them after the next start.

The app's own process keeps what the production services keep in Redis (rate
limits, catalog cache) in memory (questline.infra.kv), so embedded mode is one app
process on one machine: see the README for what it is for and where it stops.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from questline.config import Settings, get_settings

if TYPE_CHECKING:
    import uvicorn

log = logging.getLogger("questline.embedded")

# A worker that dies this soon after starting is failing to start, not crashing:
# wait longer before the next attempt instead of spinning.
_HEALTHY_AFTER_SECONDS = 10.0
_MAX_RESTART_DELAY = 30.0
_STOP_TIMEOUT = 15.0
# What each embedded worker consumes (celeryconfig.task_queues).
EVENT_QUEUES = "sign_ins,questline"
WEBHOOK_QUEUES = "webhooks"
# Sending is waiting on receivers, not writing: threads are enough, and their database
# writes (two short transactions per attempt) queue for SQLite's lock like any other.
WEBHOOK_POOL = ("threads", 4)


def serve(host: str = "127.0.0.1", port: int = 8000) -> int:
    """Prepare the data dir, start the worker, serve the app until SIGINT or SIGTERM."""
    import uvicorn

    settings = get_settings()
    _prepare(settings)
    # uvicorn handles SIGINT/SIGTERM while it runs (finishing requests in flight),
    # then restores these handlers and re-raises the signal into them: they only
    # note it, so the worker is stopped below instead of the process dying first.
    stop_signals: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stop_signals.append(signum))
    workers = [
        WorkerSupervisor(settings),
        WorkerSupervisor(
            settings, queues=WEBHOOK_QUEUES, name="embedded-webhooks", pool=WEBHOOK_POOL
        ),
    ]
    for worker in workers:
        worker.start()
    try:
        server = uvicorn.Server(uvicorn_config(host, port))
        threading.Thread(target=_announce, args=(server, host, port, settings), daemon=True).start()
        if not stop_signals:
            server.run()
        ok = server.started or bool(stop_signals)
    finally:
        for worker in workers:
            worker.stop()
    print("Questline stopped.", flush=True)
    return 0 if ok else 1


def uvicorn_config(host: str, port: int) -> uvicorn.Config:
    """The all-in-one app's server; no `server` header (it names the software)."""
    import uvicorn

    return uvicorn.Config(
        "api.main:app", host=host, port=port, log_level="info", server_header=False
    )


def _prepare(settings: Settings) -> None:
    """Data dir, signing keys, schema and seed catalog; idempotent, so every start runs it."""
    from questline import security
    from questline.infra import migrate

    data_dir = settings.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    security.ensure_keypair(settings)
    migrate.upgrade()
    if settings.celery_broker_url is None:
        from workers.embedded_broker import purge_delivered

        purge_delivered(str(data_dir / "broker.db"))


def _announce(server: object, host: str, port: int, settings: Settings) -> None:
    deadline = time.monotonic() + 60
    while not getattr(server, "started", False):
        if time.monotonic() > deadline:
            return
        time.sleep(0.05)
    shown = "localhost" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{port}"
    print(
        f"Questline is listening on {base}\n"
        f"  API docs:   {base}/docs  (OpenAPI at {base}/openapi.json)\n"
        f"  database:   {_safe_url(settings)}\n"
        f"  data dir:   {settings.data_dir.resolve()}\n"
        "Press Ctrl-C to stop.",
        flush=True,
    )


def _safe_url(settings: Settings) -> str:
    from sqlalchemy.engine import make_url

    return make_url(settings.sqlalchemy_url).render_as_string(hide_password=True)


class WorkerSupervisor:
    """Runs `celery -A workers worker --pool=solo` as a child, restarts it if it dies,
    and stops it (SIGTERM, then SIGKILL) when serve stops."""

    def __init__(
        self,
        settings: Settings,
        *,
        queues: str = EVENT_QUEUES,
        name: str = "embedded",
        pool: tuple[str, int] = ("solo", 1),
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.queues = queues
        self.name = name
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        # The thread that spawns the child must outlive it: the child's parent-death
        # signal fires when that thread ends (see _die_with_parent).
        self.thread = threading.Thread(target=self._run, name=f"questline-{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            f"--pool={self.pool[0]}",
            *([f"--concurrency={self.pool[1]}"] if self.pool[0] != "solo" else []),
            "--loglevel=INFO",
            f"--hostname={self.name}@%h",
            f"--queues={self.queues}",
            # No other workers to talk to; saves broker polling.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        # The child must find the same data dir whatever its working directory.
        env["QUESTLINE_DATA_DIR"] = str(self.settings.data_dir.resolve())
        return env

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.command(),
            env=self.environment(),
            # Its own session: Ctrl-C reaches serve only, which stops the worker
            # after the app, so no sign-in is published to a stopped worker.
            start_new_session=True,
            preexec_fn=_die_with_parent,  # takes no lock after the fork
        )

    def _run(self) -> None:
        delay = 0.5
        while not self.stopping.is_set():
            with self._lock:
                if self.stopping.is_set():
                    return
                self.process = self._spawn()
            started = time.monotonic()
            code = self.process.wait()
            if self.stopping.is_set():
                return
            if time.monotonic() - started > _HEALTHY_AFTER_SECONDS:
                delay = 0.5
            log.warning("worker exited with %s; restarting in %.1f s", code, delay)
            print(f"questline: worker exited with {code}; restarting", file=sys.stderr)
            if self.stopping.wait(delay):
                return
            delay = min(delay * 2, _MAX_RESTART_DELAY)

    def stop(self) -> None:
        """Warm shutdown: the worker finishes its task (SIGTERM); SIGKILL if it hangs."""
        with self._lock:
            self.stopping.set()
            process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self.thread.join(5)


# Loaded before any fork: the child must not take the dynamic loader's lock.
_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the forked child: get SIGTERM if serve dies without stopping us (SIGKILL)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
