"""Child processes with their output in a log file, free ports, and waiting for a
condition: the parts every run of the real system needs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")
P = TypeVar("P", bound="Process")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 1) -> bool:
    """True if something accepts connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    interval: float = 0.05,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """Poll `predicate` until it returns something true, and return that; TimeoutError
    naming `what` after `timeout` seconds. Exceptions of the `ignore` types count as
    "not yet" (a server that does not answer while it starts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
            if value:
                return value
        except ignore:
            pass
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def child_env(*layers: Mapping[str, str], pythonpath: tuple[Path, ...] = ()) -> dict[str, str]:
    """This process's environment with `layers` on top, the project importable."""
    env = dict(os.environ)
    for layer in layers:
        env.update(layer)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (ROOT, *pythonpath))
    return env


def children_of(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc), [] once it has gone."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def pid_alive(pid: int) -> bool:
    """True while the process exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def send_signal(pid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal one process by id; False if it had already gone."""
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


class Process:
    """A child in its own session (so it and its children stop together), its output
    appended to `log_path`. A context manager that stops it on the way out."""

    def __init__(
        self, args: list[str], env: Mapping[str, str], log_path: Path, cwd: Path = ROOT
    ) -> None:
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "ab")  # noqa: SIM115  closed by stop()
        self.proc = subprocess.Popen(
            args,
            env=dict(env),
            cwd=cwd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int) -> bool:
        """Signal this process alone, not its children; False if it had gone."""
        return send_signal(self.proc.pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        """Its exit status, once it has exited (TimeoutExpired after `timeout` s)."""
        return self.proc.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        """Signal the whole process group, wait, and SIGKILL what is left."""
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

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def log_path(log_dir: Path, name: str) -> Path:
    """A fresh log file name in log_dir for a process called `name`."""
    return log_dir / f"{name}-{time.monotonic_ns()}.log"
