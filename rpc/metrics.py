"""Prometheus metrics of the gRPC server: calls by method and status code, and latency.

Served on their own HTTP port (QUESTLINE_GRPC_METRICS_PORT, `--metrics-port`), apart
from the gRPC port, at /metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

REGISTRY = CollectorRegistry()
CALLS = Counter(
    "questline_grpc_calls_total",
    "gRPC calls answered, by method and status code",
    ["method", "code"],
    registry=REGISTRY,
)
LATENCY = Histogram(
    "questline_grpc_call_seconds",
    "Time to answer a gRPC call (a stream: until it ends), by method",
    ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


def serve(port: int) -> Any:
    """Serve /metrics on `port`; the HTTP server (call .shutdown() to stop it)."""
    server, _thread = start_http_server(port, registry=REGISTRY)
    return server


def _code(context: grpc.ServicerContext, failed: bool) -> str:
    code = context.code()  # type: ignore[attr-defined]  # set by abort(); not in the stubs
    if isinstance(code, grpc.StatusCode):
        return code.name
    if not context.is_active():
        return "CANCELLED"  # the client went away (a watch stream closed by its client)
    return "INTERNAL" if failed else "OK"


def _observe(method: str, context: grpc.ServicerContext, start: float, failed: bool) -> None:
    CALLS.labels(method, _code(context, failed)).inc()
    LATENCY.labels(method).observe(time.perf_counter() - start)


class MetricsInterceptor(grpc.ServerInterceptor):  # type: ignore[type-arg]
    """Counts and times every unary and server-streaming call."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _unary(handler.unary_unary, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _stream(handler.unary_stream, method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no client-streaming calls here (reflection's are not counted)


def _unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        start = time.perf_counter()
        failed = True
        try:
            answer = behavior(request, context)
            failed = False
            return answer
        finally:
            _observe(method, context, start, failed)

    return call


def _stream(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        start = time.perf_counter()
        failed = True
        try:
            yield from behavior(request, context)
            failed = False
        finally:
            _observe(method, context, start, failed)

    return call
