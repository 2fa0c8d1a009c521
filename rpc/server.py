"""`questline grpc`: the Catalog and Events services, health, reflection and metrics.

SIGTERM (or SIGINT) stops taking calls, marks the health service NOT_SERVING, ends
the watch streams, and lets calls in flight finish within
QUESTLINE_GRPC_SHUTDOWN_GRACE_SECONDS.

Health: the server's own status ("") is SERVING while the process runs (liveness);
`questline.v1.Catalog` and `questline.v1.Events` are SERVING only while the database
answers with the schema this code needs, checked every
QUESTLINE_GRPC_HEALTH_CHECK_SECONDS (readiness, as the HTTP services' /readyz).
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.exc import SQLAlchemyError

import workers.publish  # noqa: F401  (registers the after-commit senders: wake-ups)
from questline.config import get_settings
from questline.grpc_gen.v1 import catalog_pb2, catalog_pb2_grpc, events_pb2, events_pb2_grpc
from questline.infra import migrate
from rpc import metrics
from rpc.catalog import CatalogService, read_catalog
from rpc.events import EventsService
from rpc.watch import CatalogWatch
from workers.timer import Every

log = logging.getLogger(__name__)

SERVICES = (
    catalog_pb2.DESCRIPTOR.services_by_name["Catalog"].full_name,
    events_pb2.DESCRIPTOR.services_by_name["Events"].full_name,
)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024  # as POST /events' body limit


@dataclass
class Running:
    """A started server and what stops with it."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    watch: CatalogWatch
    metrics_server: Any
    database_health: Every

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, end the watch streams, let calls in flight finish."""
        grace = get_settings().grpc_shutdown_grace_seconds if grace is None else grace
        self.database_health.stop()
        self.health.enter_graceful_shutdown()
        self.watch.stop()
        self.server.stop(grace).wait()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()


def start(port: int, *, host: str = "[::]", metrics_port: int | None = None) -> Running:
    """Start serving on `port` (0: a free one) and /metrics on `metrics_port` (None: off)."""
    settings = get_settings()
    watch = CatalogWatch(read_catalog)
    server = grpc.server(
        futures.ThreadPoolExecutor(
            max_workers=settings.grpc_max_workers, thread_name_prefix="grpc-call"
        ),
        interceptors=[metrics.MetricsInterceptor()],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
        ],
    )
    catalog_pb2_grpc.add_CatalogServicer_to_server(CatalogService(watch), server)
    events_pb2_grpc.add_EventsServicer_to_server(EventsService(), server)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    check = DatabaseHealth(health_servicer)
    check()  # before the first call: a server started with the database down says so
    database_health = Every("grpc-database-health", settings.grpc_health_check_seconds, check)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    metrics_server = metrics.serve(metrics_port) if metrics_port else None
    watch.start()
    server.start()
    database_health.start()
    return Running(server, bound, health_servicer, watch, metrics_server, database_health)


class DatabaseHealth:
    """Sets the services' health from one check of the database and its schema,
    logging a change of state once."""

    def __init__(self, servicer: health.HealthServicer) -> None:
        self.servicer = servicer
        self.problem: str | None = None  # None: not checked yet

    def __call__(self) -> None:
        try:
            problem = migrate.check_schema().problem
        except SQLAlchemyError as exc:
            problem = f"the database does not answer: {type(exc).__name__}"
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if not problem
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in SERVICES:
            self.servicer.set(name, status)
        if problem != self.problem:
            if problem:
                log.error("gRPC services NOT_SERVING: %s", problem)
            elif self.problem is not None:
                log.info("gRPC services SERVING again")
            self.problem = problem


def serve(port: int, *, metrics_port: int | None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully."""
    running = start(port, metrics_port=metrics_port)
    log.info(
        "gRPC on port %d (%s), metrics on %s",
        running.port,
        ", ".join(SERVICES),
        f"http://0.0.0.0:{metrics_port}/metrics" if metrics_port else "off",
    )
    print(f"questline grpc: listening on port {running.port}", flush=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    print("questline grpc: shutting down (calls in flight finish)", flush=True)
    running.stop()
    print("questline grpc: stopped", flush=True)
