"""One place that turns domain errors into HTTP responses."""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from questline.errors import DomainError
from questline.infra import db, migrate


async def domain_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return JSONResponse(
        status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers
    )


async def database_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A database that is restarting or unreachable is a 503 the client may retry, not a
    500; so is a schema without this code's migrations, whose answer says what to run
    (retrying alone never cures it). Any other database error is a bug: a 500."""
    assert isinstance(exc, DBAPIError)
    if migrate.is_missing_schema_error(exc):
        problem = await _schema_problem()
        if problem:
            return JSONResponse(status_code=503, content={"detail": problem})
        raise exc
    if not db.is_transient(exc):
        raise exc
    return JSONResponse(
        status_code=503,
        content={"detail": "database unavailable; retry shortly"},
        headers={"Retry-After": "1"},
    )


async def _schema_problem() -> str:
    """Why the schema is not ready ("" if it is); the error that brought us here already
    names a missing table or column, so a failed look-up is reported as missing too."""
    try:
        state = await run_in_threadpool(migrate.check_schema)
    except Exception:
        return f"the database schema could not be read: {migrate.UPGRADE_HINT}"
    return state.problem


async def validation_error_handler(_request: Request, exc: Exception) -> Response:
    """FastAPI's 422 without the offending input: it may be a password, and input with a
    lone surrogate ("\\ud800") cannot be encoded as UTF-8 (which made the 422 a 500).
    Rendered as ASCII JSON, since messages and locations may still carry such text."""
    assert isinstance(exc, RequestValidationError)
    errors = [{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in exc.errors()]
    body = json.dumps({"detail": jsonable_encoder(errors)}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


def _document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document say what the app really answers: a 422 `detail` is
    FastAPI's error list or, from the domain, a message; any body may be refused with
    400 (not JSON text) or 413 (over the size limit) before validation."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        shapes = schema.get("components", {}).get("schemas", {})
        if "HTTPValidationError" in shapes:
            detail = shapes["HTTPValidationError"]["properties"]["detail"]
            shapes["HTTPValidationError"]["properties"]["detail"] = {
                "title": "Detail",
                "anyOf": [{k: v for k, v in detail.items() if k != "title"}, {"type": "string"}],
            }
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                if isinstance(operation, dict) and "requestBody" in operation:
                    answers = operation.setdefault("responses", {})
                    answers.setdefault("400", {"description": "the body is not JSON text"})
                    answers.setdefault("413", {"description": "the body is over 64 KiB"})
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


async def transient_error_handler(_request: Request, exc: Exception) -> JSONResponse:
    """A service the request needs is away (the catalog's gRPC server): 503, retry."""
    return JSONResponse(status_code=503, content={"detail": str(exc)}, headers={"Retry-After": "1"})


def install(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, domain_error_handler)
    app.add_exception_handler(db.TransientError, transient_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    _document_errors(app)
    app.add_exception_handler(DBAPIError, database_error_handler)
