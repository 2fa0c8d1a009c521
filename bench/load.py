"""HTTP load with a lean asyncio client, so the load itself costs little CPU: an open
loop of refresh sign-ins at an offered rate, and a closed loop of any request."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

_LENGTH = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


class Connection:
    """One keep-alive HTTP/1.1 connection: a lean client so the load costs little CPU."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.port = 0

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = cls(reader, writer)
        conn.port = port
        return conn

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: str = ""
    ) -> tuple[int, bytes]:
        try:
            return await self._request(method, path, body, headers)
        except (asyncio.IncompleteReadError, ConnectionError):
            # The server closes keep-alive connections left idle (uvicorn: 5 s).
            self.writer.close()
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            return await self._request(method, path, body, headers)

    async def _request(
        self, method: str, path: str, body: bytes = b"", headers: str = ""
    ) -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\n{headers}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        raw = await self.reader.readuntil(b"\r\n\r\n")
        match = _LENGTH.search(raw)
        payload = await self.reader.readexactly(int(match.group(1))) if match else b""
        return int(raw[9:12]), payload

    def close(self) -> None:
        self.writer.close()


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    missed: int = 0  # offered while every connection was busy
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def latency(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, int(q * len(xs)))]


async def offered_refresh_load(
    port: int, tokens: list[str], rate: float, seconds: float, connections: int = 64
) -> LoadResult:
    """Open loop: a refresh every 1/rate s, each by a player whose last one has answered."""
    result = LoadResult()
    players = deque(tokens)
    idle = [await Connection.open(port) for _ in range(connections)]

    async def one(conn: Connection, token: str) -> None:
        t = time.perf_counter()
        status, payload = await conn.request(
            "POST", "/auth/refresh", json.dumps({"refresh_token": token}).encode()
        )
        result.latencies.append(time.perf_counter() - t)
        idle.append(conn)
        if status == 200:
            result.ok += 1
            players.append(json.loads(payload)["refresh_token"])
        else:
            result.failed += 1

    tasks = []
    start = time.perf_counter()
    sent = 0
    while True:
        due = start + sent / rate
        if due >= start + seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent += 1
        if not idle or not players:
            result.missed += 1
            continue
        tasks.append(asyncio.create_task(one(idle.pop(), players.popleft())))
    await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    for conn in idle:
        conn.close()
    return result


async def closed_loop(
    port: int,
    request: Callable[[int], tuple[str, str, bytes, str]],
    seconds: float,
    connections: int,
) -> LoadResult:
    """Each connection sends its next request as soon as the last one answered."""
    result = LoadResult()
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def run() -> None:
        conn = await Connection.open(port)
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            status, _ = await conn.request(*request(next(counter)))
            result.latencies.append(time.perf_counter() - t)
            if status == 200:
                result.ok += 1
            else:
                result.failed += 1
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(connections)))
    result.elapsed = time.perf_counter() - start
    return result
