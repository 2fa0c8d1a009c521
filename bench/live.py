"""(i) live updates: what open GET /me/stream connections cost, and how soon a sign-in
reaches its player's stream.

One processing API process (uvicorn, production defaults: a heartbeat every 15 s, the
re-check of every stream every 5 s) with N streams of N players opened by a lean asyncio
client:
- idle: the server process's RSS before and after opening them, and its CPU seconds
  over an idle window (heartbeats and re-checks only);
- under load: the benchmark's end-to-end load (refresh sign-ins at an offered rate over
  HTTP to the auth service, Celery workers applying them) on the same players, while
  they stream. The delay of a sign-in is from its stored created_at (set just before
  its transaction commits, so the figure is a little pessimistic) to the arrival of its
  `sign_in` message; the delay of its quest_progress message (the worker's, "the
  banner") is measured the same way, from the sign-in's created_at.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import harness
from bench.load import offered_refresh_load
from bench.system import Bench, wait_worker_ready

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * PAGE_SIZE


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@dataclass
class Arrivals:
    """What the streams received: per sign-in, when its items arrived."""

    sign_in_delays: list[float] = field(default_factory=list)
    progress_delays: list[float] = field(default_factory=list)
    messages: int = 0
    heartbeats: int = 0
    foreign: int = 0
    sign_in_created: dict[int, float] = field(default_factory=dict)


class Stream:
    """One GET /me/stream connection, reading until closed."""

    def __init__(self, user_id: int, token: str) -> None:
        self.user_id = user_id
        self.token = token
        self.task: asyncio.Task[None] | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self, port: int, arrivals: Arrivals) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer = writer
        writer.write(
            f"GET /me/stream HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {self.token}"
            "\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        if head[9:12] != b"200":
            raise RuntimeError(f"stream of user {self.user_id}: {head[:200]!r}")
        self.task = asyncio.create_task(self._read(reader, arrivals))

    async def _read(self, reader: asyncio.StreamReader, arrivals: Arrivals) -> None:
        # Chunked transfer encoding: size lines are skipped, SSE lines kept.
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                if line.startswith(b"data: "):
                    received = time.time()
                    self._item(json.loads(line[6:]), received, arrivals)
                elif line.startswith(b": heartbeat"):
                    arrivals.heartbeats += 1
        except (ConnectionError, asyncio.CancelledError):
            return

    def _item(self, item: dict[str, Any], received: float, arrivals: Arrivals) -> None:
        arrivals.messages += 1
        created = datetime.fromisoformat(item["created_at"]).timestamp()
        if item["type"] == "sign_in":
            arrivals.sign_in_delays.append(received - created)
            arrivals.sign_in_created[item["event_id"]] = created
        elif item["type"] == "quest_progress":
            origin = arrivals.sign_in_created.get(item["data"].get("sign_in_id"))
            if origin is not None:
                arrivals.progress_delays.append(received - origin)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        if self.writer is not None:
            self.writer.close()


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _open_all(port: int, tokens: list[tuple[int, str]], arrivals: Arrivals) -> list[Stream]:
    streams = [Stream(u, t) for u, t in tokens]
    for start in range(0, len(streams), 100):  # not all at once: the listen backlog
        await asyncio.gather(*(s.open(port, arrivals) for s in streams[start : start + 100]))
    return streams


async def _read_streams(port: int, tokens: list[tuple[int, str]], pipe: Any) -> None:
    """The readers' process: one stream first ("warm"), the rest on "go" ("open"), the
    heartbeat count on "count", everything received on "stop"."""
    arrivals = Arrivals()
    streams = await _open_all(port, tokens[:1], arrivals)
    pipe.send("warm")
    while True:
        while not pipe.poll():
            await asyncio.sleep(0.05)
        command = pipe.recv()
        if command == "go":
            streams += await _open_all(port, tokens[1:], arrivals)
            pipe.send("open")
        elif command == "count":
            pipe.send((arrivals.heartbeats, len(arrivals.sign_in_delays)))
        else:
            for stream in streams:
                stream.close()
            pipe.send(
                {
                    "sign_in": arrivals.sign_in_delays,
                    "progress": arrivals.progress_delays,
                    "rusage": time.process_time(),
                }
            )
            return


def _reader_main(port: int, tokens: list[tuple[int, str]], pipe: Any) -> None:
    asyncio.run(_read_streams(port, tokens, pipe))


def _scenario(
    b: Bench, api_pid: int, port: int, auth_port: int, n: int, rate: float, seconds: float
) -> dict[str, Any]:
    from questline import security

    tokens = [(u, security.mint_access_token(u, "player")[0]) for u in range(1, n + 1)]
    # The streams are read in a process of their own, so that the load generator (this
    # process) never delays a message's arrival time.
    context = mp.get_context("spawn")
    pipe, child_pipe = context.Pipe()
    reader = context.Process(target=_reader_main, args=(port, tokens, child_pipe), daemon=True)
    reader.start()
    try:
        return _run(b, api_pid, port, auth_port, n, rate, seconds, pipe)
    finally:
        reader.join(30)
        if reader.is_alive():
            reader.kill()


def _holds(port: int) -> tuple[float, float]:
    """The stream API's holds so far: how many, and their seconds in all."""
    import httpx

    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = dict.fromkeys(("count", "sum"), 0.0)
    for line in text.splitlines():
        for kind in found:
            if line.startswith(f"questline_live_hold_seconds_{kind} "):
                found[kind] = float(line.split()[1])
    return found["count"], found["sum"]


def _run(
    b: Bench,
    api_pid: int,
    api_port: int,
    auth_port: int,
    n: int,
    rate: float,
    seconds: float,
    pipe: Any,
) -> dict[str, Any]:
    def ask(command: str | None, timeout: float = 300) -> Any:
        if command is not None:
            pipe.send(command)
        if not pipe.poll(timeout):
            raise RuntimeError(f"the stream readers did not answer {command!r}")
        return pipe.recv()

    # One stream first, so imports, the hub and its Redis subscription are counted in
    # "before", not charged to the streams.
    assert ask(None) == "warm"
    time.sleep(1)
    rss_before = rss_bytes(api_pid)
    assert ask("go") == "open"
    time.sleep(3)  # let the server settle (allocations, the first re-check)
    rss_after = rss_bytes(api_pid)

    idle = 20.0 if b.quick else 60.0
    beats0, _ = ask("count")
    cpu0, t0 = cpu_seconds(api_pid), time.monotonic()
    time.sleep(idle)
    cpu_idle = cpu_seconds(api_pid) - cpu0
    idle_elapsed = time.monotonic() - t0
    beats1, _ = ask("count")

    refresh_tokens = b.make_refresh_tokens(n)
    cpu1 = cpu_seconds(api_pid)
    load = asyncio.run(offered_refresh_load(auth_port, refresh_tokens, rate, seconds))
    harness.wait_until(lambda: b.pending() == 0, 300, "the sign-ins to be applied")
    harness.wait_until(lambda: ask("count")[1] >= load.ok, 60, "every sign-in's message to arrive")
    time.sleep(2)  # the last quest_progress messages
    cpu_load = cpu_seconds(api_pid) - cpu1
    holds, held_seconds = _holds(api_port)
    lag = b.lag_percentiles()  # sign-in stored -> applied by a worker, for comparison
    got = ask("stop")
    sign_in, progress = got["sign_in"], got["progress"]
    return {
        "streams": n,
        "rss_before_mib": rss_before / 2**20,
        "rss_after_mib": rss_after / 2**20,
        "rss_per_stream_kib": (rss_after - rss_before) / (n - 1) / 1024,
        "idle_seconds": idle_elapsed,
        "idle_cpu_seconds": cpu_idle,
        "idle_cpu_percent": 100 * cpu_idle / idle_elapsed,
        "heartbeats_in_idle": beats1 - beats0,
        "offered": rate,
        "sustained": load.rate,
        "sign_ins": load.ok,
        "failed": load.failed,
        "sign_in_messages": len(sign_in),
        "sign_in_delay_p50_ms": 1000 * percentile(sign_in, 0.5),
        "sign_in_delay_p99_ms": 1000 * percentile(sign_in, 0.99),
        "progress_messages": len(progress),
        "progress_delay_p50_ms": 1000 * percentile(progress, 0.5),
        "progress_delay_p99_ms": 1000 * percentile(progress, 0.99),
        "stream_api_cpu_seconds_under_load": cpu_load,
        "readers_cpu_seconds": got["rusage"],
        "holds": holds,
        "hold_mean_ms": 1000 * held_seconds / holds if holds else 0.0,
        "applied_lag_p50_ms": 1000 * lag[0],
        "applied_lag_p99_ms": 1000 * lag[2],
    }


def measure_live(
    b: Bench, streams: int, rate: float, seconds: float, workers: int
) -> dict[str, Any]:
    """Figures of (i); the stream server is one process, the auth API b.processes."""
    from workers.celery_app import app as questline_app

    b.reset()
    b.make_users(streams)
    # Production defaults for the streams, whatever the environment says.
    env = {"QUESTLINE_STREAM_HEARTBEAT_SECONDS": "15", "QUESTLINE_STREAM_RECHECK_SECONDS": "5"}
    with (
        # Auth first: it creates the signing key pair the processing service verifies with.
        b.api("api.auth.main:app", b.processes) as auth_api,
        b.api("api.processing.main:app", 1, **env) as live_api,
        b.celery_worker("workers", workers) as worker,
    ):
        wait_worker_ready(questline_app, worker)
        return _scenario(b, live_api.pid, live_api.port, auth_api.port, streams, rate, seconds)
