"""Health, readiness and Prometheus metrics, served by every service."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from questline import outbox
from questline.config import get_settings
from questline.infra.db import session_factory

REQUESTS = Counter(
    "questline_http_requests_total",
    "HTTP requests answered",
    ["service", "method", "route", "status"],
)
LATENCY = Histogram(
    "questline_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
OUTBOX_PENDING = Gauge("questline_outbox_pending", "Sign-ins stored but not yet processed")
OUTBOX_DEAD = Gauge("questline_outbox_dead", "Sign-ins in the dead-letter state")
OUTBOX_LAG = Gauge(
    "questline_outbox_oldest_pending_seconds", "Age of the oldest unprocessed sign-in"
)


class MetricsMiddleware:
    """Counts and times every request by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            method = scope["method"]
            REQUESTS.labels(self.service, method, path, str(status)).inc()
            LATENCY.labels(self.service, method, path).observe(time.perf_counter() - start)


def check_database() -> None:
    with session_factory()() as session:
        session.execute(text("SELECT 1"))


def check_broker() -> None:
    settings = get_settings()
    if settings.redis_url is None:
        return  # embedded: the broker lives in the database checked above
    from questline.infra.kv import get_kv

    get_kv().ping()


def router() -> APIRouter:
    r = APIRouter(tags=["operations"])

    @r.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @r.get("/readyz", responses={503: {"description": "a dependency does not answer"}})
    def readyz() -> Any:
        """The database and the broker answer."""
        checks: dict[str, str] = {}
        for name, check in (("database", check_database), ("broker", check_broker)):
            try:
                check()
                checks[name] = "ok"
            except Exception as exc:  # any failure means not ready
                checks[name] = f"{type(exc).__name__}: {exc}"[:300]
        failed = [name for name, state in checks.items() if state != "ok"]
        if failed:
            return JSONResponse(
                status_code=503,
                content={"status": "unavailable", "failed": failed, "checks": checks},
            )
        return {"status": "ok", "checks": checks}

    @r.get("/metrics", response_class=Response)
    def metrics() -> Response:
        """Prometheus text format: request counts and latencies, outbox depth and lag."""
        try:
            s = outbox.stats()
            OUTBOX_PENDING.set(s.pending)
            OUTBOX_DEAD.set(s.dead)
            OUTBOX_LAG.set(s.oldest_pending_age_seconds)
        except Exception:  # metrics must answer even when the database does not
            pass
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return r
