"""`questline grpc`: the Catalog and Events services, health, reflection and metrics.

SIGTERM (or SIGINT) stops taking calls, marks the health service NOT_SERVING, ends
the watch streams, and lets calls in flight finish within
QUESTLINE_GRPC_SHUTDOWN_GRACE_SECONDS.
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

import workers.publish  # noqa: F401  (registers the after-commit senders: wake-ups)
from questline.config import get_settings
from questline.grpc_gen.v1 import catalog_pb2, catalog_pb2_grpc, events_pb2, events_pb2_grpc
from rpc import metrics
from rpc.catalog import CatalogService, read_catalog
from rpc.events import EventsService
from rpc.watch import CatalogWatch

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

    def stop(self, grace: float | None = None) -> None:
        """Refuse new calls, end the watch streams, let calls in flight finish."""
        grace = get_settings().grpc_shutdown_grace_seconds if grace is None else grace
        self.health.enter_graceful_shutdown()
        self.watch.stop()
        self.server.stop(grace).wait()
        if self.metrics_server is not None:
            self.metrics_server.shutdown()


def start(
    port: int, *, host: str = "[::]", metrics_port: int | None = None
) -> Running:
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
    for name in ("", *SERVICES):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"cannot listen on {host}:{port}")
    metrics_server = metrics.serve(metrics_port) if metrics_port else None
    watch.start()
    server.start()
    return Running(server, bound, health_servicer, watch, metrics_server)


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
