"""Domain errors as gRPC status codes: the one place that maps them (as api/errors.py
does for HTTP)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from questline.errors import DomainError
from questline.infra import db

# By the HTTP status each domain error carries.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.ABORTED,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    503: grpc.StatusCode.UNAVAILABLE,
}


@contextmanager
def answered(context: grpc.ServicerContext) -> Iterator[None]:
    """End the call with the status of a domain error (or UNAVAILABLE for a transient
    database error) raised inside; anything else stays an error (INTERNAL)."""
    try:
        yield
    except DomainError as exc:
        if exc.headers and "Retry-After" in exc.headers:
            context.set_trailing_metadata((("retry-after", exc.headers["Retry-After"]),))
        context.abort(CODES.get(exc.status_code, grpc.StatusCode.INVALID_ARGUMENT), exc.detail)
    except Exception as exc:
        if db.is_transient(exc):
            context.abort(grpc.StatusCode.UNAVAILABLE, "the database is not answering; retry")
        raise


def metadata(context: grpc.ServicerContext, name: str) -> str | None:
    """The call's metadata value `name` (lower case), or None."""
    for key, value in context.invocation_metadata():
        if key == name:
            return value if isinstance(value, str) else None
    return None
