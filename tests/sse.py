"""A Server-Sent Events client for tests: httpx streaming over real HTTP, parsed as the
WHATWG EventSource parser does, read by a thread into a queue so that a test waits for
messages with deadlines."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Message:
    id: str | None
    event: str
    data: str

    @property
    def item(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.data)
        return value


@dataclass
class Comment:
    text: str


@dataclass
class Closed:
    """The server ended the response."""


@dataclass
class SseStream:
    """One GET of an event stream, read by a background thread until the server ends it
    or `close()` (which takes effect at the next line the server sends: a heartbeat)."""

    base_url: str
    path: str
    headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.queue: queue.Queue[Message | Comment | Closed | BaseException] = queue.Queue()
        self.status: int | None = None
        self.body = b""
        self.messages: list[Message] = []
        self.comments: list[str] = []
        self.closed = False
        self.last_event_id: str | None = None
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def open(self, timeout: float = 30) -> SseStream:
        self._thread.start()
        assert self._opened.wait(timeout), "the stream did not answer"
        return self

    def _run(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(30, read=60)) as c,
                c.stream("GET", self.path, headers=dict(self.headers), params=self.params) as r,
            ):
                self.status = r.status_code
                if r.status_code != 200:
                    self.body = r.read()
                    self._opened.set()
                    return
                self._opened.set()
                self._parse(r)
            self.queue.put(Closed())
        except BaseException as exc:  # reported to the test by next()
            self._opened.set()
            self.queue.put(exc)

    def _parse(self, response: httpx.Response) -> None:
        data: list[str] = []
        event_id: str | None = None
        event = ""
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if line == "":
                if data:
                    self.queue.put(Message(event_id, event or "message", "\n".join(data)))
                data, event_id, event = [], None, ""
            elif line.startswith(":"):
                self.queue.put(Comment(line[1:].strip()))
            else:
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "event":
                    event = value
                elif name == "id":
                    event_id = value

    def next(self, timeout: float) -> Message | Comment | Closed:
        got = self.queue.get(timeout=timeout)
        if isinstance(got, BaseException):
            raise got
        if isinstance(got, Message):
            self.messages.append(got)
            if got.id is not None:
                self.last_event_id = got.id  # what EventSource sends back on reconnect
        elif isinstance(got, Comment):
            self.comments.append(got.text)
        else:
            self.closed = True
        return got

    def wait_for(
        self, done: Callable[[SseStream], bool], timeout: float = 60, what: str = "messages"
    ) -> None:
        """Read until `done(self)` holds; fail after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not done(self):
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                raise AssertionError(
                    f"waited for {what}; got {[m.id for m in self.messages]}, "
                    f"comments {self.comments[-5:]}, closed={self.closed}"
                )
            try:
                self.next(timeout=left)
            except queue.Empty:
                pass

    def wait_messages(self, count: int, timeout: float = 60) -> list[Message]:
        self.wait_for(lambda s: len(s.messages) >= count, timeout, f"{count} messages")
        return self.messages

    def wait_closed(self, timeout: float = 60) -> None:
        self.wait_for(lambda s: s.closed, timeout, "the server to end the stream")

    def close(self) -> None:
        """Drop the connection (at the next line from the server, a heartbeat at most)."""
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the stream reader did not stop"

    def __enter__(self) -> SseStream:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
