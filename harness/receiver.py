"""A webhook receiver on loopback for tests and the fault-injection run: a threaded HTTP
server that records every request and answers as its script says."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from harness.processes import free_port


@dataclass
class Received:
    """One request as the receiver got it."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when it arrived
    number: int  # 1 for the first request with this webhook-id, 2 for the next, ...
    status: int | None = None  # what the receiver answered (None: still deciding)
    connection: int = 0  # the sender's port: requests on one kept-alive connection share it

    @property
    def message_id(self) -> str:
        return self.headers.get("webhook-id", "")

    def json(self) -> Any:
        return json.loads(self.body)


# Given a request, the status to answer; it may block first (a receiver that hangs).
Script = Callable[[Received], int]


def always(status: int = 200) -> Script:
    return lambda _request: status


def fail_first(times: int, status: int = 500) -> Script:
    """`status` for the first `times` requests of each webhook-id, then 200."""
    return lambda request: status if request.number <= times else 200


class QuietServer(ThreadingHTTPServer):
    """Senders that drop a kept-alive connection (a killed worker) are not errors."""

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class Receiver:
    """Serves on 127.0.0.1:`port` (a free one by default) once started."""

    script: Script = field(default_factory=always)
    port: int = field(default_factory=free_port)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._seen: dict[str, int] = {}  # requests so far per webhook-id

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as receivers in production do

            def do_POST(self) -> None:  # noqa: N802 (the http.server name)
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-request (a killed worker): nothing arrived.
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver._lock:
                    key = headers.get("webhook-id", "")
                    number = receiver._seen[key] = receiver._seen.get(key, 0) + 1
                    request = Received(
                        self.path,
                        headers,
                        body,
                        time.monotonic(),
                        number,
                        connection=self.client_address[1],
                    )
                    receiver.received.append(request)
                try:
                    status = receiver.script(request)
                except Exception:
                    status = 500
                request.status = status
                try:
                    self.send_response(status)
                    if 300 <= status < 400:
                        self.send_header("location", f"http://127.0.0.1:{receiver.port}/moved")
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the sender gave up waiting

            def log_message(self, *_args: Any) -> None:
                pass

        server = QuietServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="receiver", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def by_message(self) -> dict[str, list[Received]]:
        grouped: dict[str, list[Received]] = {}
        for r in self.requests():
            grouped.setdefault(r.message_id, []).append(r)
        return grouped

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
