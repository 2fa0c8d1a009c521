"""The nemesis: SIGKILLs worker main processes and pool children by PID, SIGKILLs
the broker (Redis, or RabbitMQ with --broker rabbitmq) and restarts it, restarts
PostgreSQL, and stops the broker for 10 s; and the restart loops that bring killed
workers back, as a process supervisor would."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import harness

from . import log
from .brokers import ChaosBroker


class WorkerSlot:
    """One Celery worker kept alive by a restart loop, like a process supervisor."""

    def __init__(self, slot: int, env: dict[str, str], workdir: Path, concurrency: int) -> None:
        self.slot = slot
        self.env = env
        self.log_path = workdir / f"worker-{slot}.log"
        self.concurrency = concurrency
        self.proc: harness.Process | None = None
        self.starts = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _spawn(self) -> harness.Process:
        self.starts += 1
        args = harness.worker_args(
            name=f"chaos{self.slot}-{self.starts}",
            concurrency=self.concurrency,
            include="chaos.probe",
        )
        return harness.Process(args, self.env, self.log_path)

    def _loop(self) -> None:
        while not self.stopping:
            self.proc = proc = self._spawn()
            pool: list[int] = []
            while proc.alive():
                pool = harness.children_of(proc.pid) or pool
                time.sleep(0.2)
            proc.stop()  # it has exited: this closes its log
            # A dead main process takes its pool with it, as a crashed host would.
            for pid in pool:
                harness.send_signal(pid)
            time.sleep(0.3)

    def start(self) -> None:
        self.thread.start()

    def pool_children(self) -> list[int]:
        return harness.children_of(self.proc.pid) if self.proc else []

    def stop(self) -> None:
        self.stopping = True
        proc = self.proc
        if proc is not None and proc.alive():
            pool = self.pool_children()
            proc.kill(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill(signal.SIGKILL)
                proc.wait(5)
            for pid in pool:
                harness.send_signal(pid)
        self.thread.join(5)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


@dataclass
class Faults:
    main_kills: int = 0
    child_kills: int = 0
    broker_kills: int = 0
    broker_stops: int = 0
    pg_restarts: int = 0
    pg_restart_errors: list[str] = field(default_factory=list)
    # The broker stopped: (from, to), monotonic; to = when it answered again.
    outage: tuple[float, float] | None = None
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
    broker: ChaosBroker,
    faults: Faults,
    stop: threading.Event,
    t0: float,
    *,
    restart_pg: bool,
    kill_every: float,
    duration: float,
) -> None:
    """Kill workers every couple of seconds; broker and PostgreSQL faults on a schedule."""
    rng = random.Random(11)
    schedule = [(0.15 * duration, "kill-broker"), (0.6 * duration, "stop-broker")]
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
            if what == "kill-broker":
                log(f"SIGKILL {broker.name}, restart it", t0)
                broker.kill(signal.SIGKILL)
                faults.broker_kills += 1
                time.sleep(1)
                broker.start()
                log(f"{broker.name} is back", t0)
            elif what == "restart-pg":
                log("restart PostgreSQL (-m fast)", t0)
                error = pg_restart()
                if error:
                    faults.pg_restart_errors.append(error)
                    log(f"PostgreSQL restart failed: {error}", t0)
                else:
                    faults.pg_restarts += 1
            elif what == "stop-broker":
                log(f"stop {broker.name} for 10 s; logins go on", t0)
                start = time.monotonic()
                broker.kill(signal.SIGTERM)
                faults.broker_stops += 1
                time.sleep(10)
                broker.start()
                faults.outage = (start, time.monotonic())
                log(f"{broker.name} is back", t0)
            continue
        if time.monotonic() >= next_kill:
            next_kill = time.monotonic() + kill_every
            slot = slots[turn % len(slots)]
            if turn % 2 == 0 and slot.proc is not None and slot.proc.alive():
                if slot.proc.kill(signal.SIGKILL):
                    faults.main_kills += 1
            else:
                pool = slot.pool_children()
                if pool and harness.send_signal(rng.choice(pool)):
                    faults.child_kills += 1
            turn += 1
        time.sleep(0.05)
