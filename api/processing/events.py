"""Gameplay events from game servers (Quest Processing service, API keys only).

POST /events is the high-rate path: the whole request (key check, checks, one INSERT,
commit) runs in one trip to the thread pool, on one transaction, and the answer is
written without a second validation pass. The workers are woken by the after-commit
hook (the stored events are queued on the session; workers/publish.py sends them).
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any, NoReturn

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from api.deps import MAX_ID, SessionDep
from api.processing.schemas import EventResultsOut, EventStatusOut, event_batch_schema
from questline.credentials import service as credentials
from questline.credentials.service import CallingKey, Scope
from questline.errors import DomainError
from questline.events import service as events
from questline.infra.db import session_factory

router = APIRouter(tags=["events"])

ApiKeyHeader = Annotated[
    str | None,
    Header(alias="X-API-Key", description="An API key from POST /auth/api-keys"),
]
EventIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="an event_id")]
KEY_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "missing, unknown or revoked API key (player tokens are not keys)"},
    403: {"description": "the key lacks the scope"},
}


class NotJson(DomainError):
    detail = "the body is not JSON text"


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _parse(body: bytes) -> Any:
    # Decimals, not floats, so that a value is stored exactly as it was written.
    try:
        return json.loads(body, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise NotJson() from None


def _record(api_key: str | None, body: bytes) -> events.RecordedBatch:
    with session_factory()() as session:
        key = credentials.authenticate_remembered(session, api_key, scope=Scope.EVENTS_WRITE)
        with credentials.live_key_first(session, key):
            batch = events.record(session, _parse(body), api_key=key)
        try:
            session.commit()
        except BaseException:
            events.refund(batch)
            raise
    return batch


@router.post(
    "/events",
    status_code=202,
    response_model=EventResultsOut,
    responses={
        **KEY_ERRORS,
        400: {"description": "the body is not JSON text"},
        413: {"description": "the body is over 4 MiB"},
        422: {"description": "an invalid event: `detail` names its index, field and why"},
        429: {"description": "over the events per user per minute; see Retry-After"},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": event_batch_schema()}},
        }
    },
)
async def record_events(request: Request, x_api_key: ApiKeyHeader = None) -> Any:
    """Store a batch of 1-1000 gameplay events, all or nothing (key with events:write)."""
    body = await request.body()
    batch = await run_in_threadpool(_record, x_api_key, body)
    return JSONResponse(
        status_code=202,
        content={
            "results": [
                {
                    "idempotency_key": r.idempotency_key,
                    "event_id": r.event_id,
                    "status": r.status.value,
                }
                for r in batch.results
            ]
        },
    )


def any_api_key(session: SessionDep, x_api_key: ApiKeyHeader = None) -> CallingKey:
    return credentials.authenticate(session, x_api_key, scope=None)


@router.get(
    "/events/{event_id}",
    response_model=EventStatusOut,
    responses={**KEY_ERRORS, 404: {"description": "no such event"}},
)
def event_status(
    event_id: EventIdPath,
    _key: Annotated[CallingKey, Depends(any_api_key)],
    session: SessionDep,
) -> Any:
    """A stored event and whether the workers have applied it (any live key)."""
    return events.event_status(session, event_id=event_id)
