"""Health, readiness and Prometheus metrics, served by every service.

Health and readiness are `async` routes: they never queue behind the thread pool
that `def` routes (and argon2 hashing) share. Readiness runs its blocking checks on
a small executor of its own, each with a time limit, and logs what failed only when
that changes, so a probe every few seconds does not flood the log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from questline import outbox
from questline.config import get_settings
from questline.infra import migrate
from questline.infra.db import get_engine

log = logging.getLogger("questline.operations")

# The API's own metrics: the worker's counters live in workers.metrics, on a registry
# of their own, so that neither role exports the other's (always zero) series.
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)

REQUESTS = Counter(
    "questline_http_requests_total",
    "HTTP requests answered",
    ["service", "method", "route", "status"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "questline_http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["service", "method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
OUTBOX_PENDING = Gauge(
    "questline_outbox_pending", "Sign-ins stored but not yet processed", registry=REGISTRY
)
OUTBOX_DEAD = Gauge("questline_outbox_dead", "Sign-ins in the dead-letter state", registry=REGISTRY)
OUTBOX_LAG = Gauge(
    "questline_outbox_oldest_pending_seconds",
    "Age of the oldest unprocessed sign-in",
    registry=REGISTRY,
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


# Readiness checks block (a database round trip, a Redis ping): they run here, never
# on anyio's pool, so a pool full of slow requests cannot make a service look dead.
_CHECKS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="questline-readiness")
# A check that has not answered by then counts as failed (the probe must answer).
CHECK_TIMEOUT_SECONDS = 5.0


def check_database() -> migrate.SchemaState:
    """The database answers; returns where its schema stands."""
    with get_engine().connect() as connection:
        connection.execute(text("SELECT 1"))
        return migrate.schema_state(connection)


def check_broker() -> None:
    """The Celery broker answers: Redis, or RabbitMQ (a connection and its handshake);
    the embedded broker lives in the database checked beside it."""
    from workers import broker

    broker.readiness_check()


def check_catalog_grpc() -> None:
    """The catalog's gRPC server (QUESTLINE_CATALOG_GRPC) answers: without it, events
    wait instead of being applied against an old copy of the catalog."""
    from questline.catalog.grpc_source import GrpcCatalog
    from questline.catalog.source import catalog_source

    source = catalog_source()
    if isinstance(source, GrpcCatalog):
        problem = source.problem()
        if problem:
            raise ConnectionError(f"catalog gRPC unreachable: {problem}")


class Readiness:
    """The checks behind /readyz and the start-up report, and what was last logged."""

    def __init__(self, *, catalog: bool = False) -> None:
        self._logged: dict[str, str] = {}
        settings = get_settings()
        # Only where definitions are read over gRPC (not in the embedded mode).
        self._catalog = catalog and settings.catalog_grpc is not None and not settings.embedded

    async def _run(self, check: Callable[[], Any]) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(
            loop.run_in_executor(_CHECKS, check), timeout=CHECK_TIMEOUT_SECONDS
        )

    def _report(self, name: str, problem: str) -> None:
        """Log a check's problem when it changes (and its recovery), never twice in a row."""
        if self._logged.get(name, "") == problem:
            return
        self._logged[name] = problem
        if problem:
            log.error("readiness check %r failed: %s", name, problem)
        else:
            log.info("readiness check %r passes again", name)

    async def _database(self, checks: dict[str, str]) -> None:
        try:
            state: migrate.SchemaState = await self._run(check_database)
        except Exception as exc:  # any failure means not ready; the schema is unknown
            checks["database"] = "failed"
            self._report("database", _describe(exc))
            return
        checks["database"] = "ok"
        self._report("database", "")
        checks["schema"] = "ok" if state.ready else "failed"
        self._report("schema", state.problem)

    async def _broker(self, checks: dict[str, str]) -> None:
        try:
            await self._run(check_broker)
        except Exception as exc:
            checks["broker"] = "failed"
            self._report("broker", _describe(exc))
            return
        checks["broker"] = "ok"
        self._report("broker", "")

    async def _catalog_grpc(self, checks: dict[str, str]) -> None:
        if not self._catalog:
            return
        try:
            await self._run(check_catalog_grpc)
        except Exception as exc:
            checks["catalog_grpc"] = "failed"
            self._report("catalog_grpc", _describe(exc))
            return
        checks["catalog_grpc"] = "ok"
        self._report("catalog_grpc", "")

    async def check(self) -> dict[str, str]:
        """Each check's name and "ok" or "failed"; the schema only once the database answers."""
        database: dict[str, str] = {}
        broker: dict[str, str] = {}
        catalog: dict[str, str] = {}
        await asyncio.gather(
            self._database(database), self._broker(broker), self._catalog_grpc(catalog)
        )
        return {**database, **broker, **catalog}

    async def report_at_start(self) -> None:
        """Log, once, what keeps the service from being ready (an unmigrated schema)."""
        await self._database({})


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    return f"{type(exc).__name__}: {exc}"


def router(readiness: Readiness) -> APIRouter:
    r = APIRouter(tags=["operations"])

    @r.get("/healthz")
    async def healthz() -> dict[str, str]:
        """The process is alive."""
        return {"status": "ok"}

    @r.get("/readyz", responses={503: {"description": "the checks named in `failed` failed"}})
    async def readyz() -> Any:
        """The database answers with the schema this code needs, and the broker answers."""
        checks = await readiness.check()
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
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return r
