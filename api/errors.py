"""One place that turns domain errors into HTTP responses."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError

from questline import db
from questline.errors import DomainError


async def domain_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return JSONResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
    )


async def database_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A database that is restarting or unreachable is a 503 the client may retry, not a
    500; any other database error is a bug and stays a 500."""
    assert isinstance(exc, DBAPIError)
    if not db.is_transient(exc):
        raise exc
    return JSONResponse(
        status_code=503,
        content={"detail": "database unavailable; retry shortly"},
        headers={"Retry-After": "1"},
    )


async def validation_error_handler(_request: Request, exc: Exception) -> Response:
    """FastAPI's 422, rendered as ASCII JSON: the errors echo the input, and input with a
    lone surrogate ("\\ud800") cannot be encoded as UTF-8, which made the 422 a 500."""
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(DBAPIError, database_error_handler)
