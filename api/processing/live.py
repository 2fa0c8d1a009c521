"""GET /me/stream: a player's history as Server-Sent Events, live.

Each open stream waits until the process's hub (api/processing/live_hub.py) wakes it:
a LiveUpdate for its player arrived (Redis pub/sub, or in-process when embedded), or
the periodic re-check found something. A woken stream reads its items from the database
after the last event_id it sent (questline.quests.live), so the order is the history's
and a reconnect with Last-Event-ID (or ?after=) resumes with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import Counter
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import MAX_ID, bearer
from api.observability import REGISTRY
from api.processing.live_hub import hub
from api.processing.schemas import MyEvent
from questline.config import get_settings
from questline.errors import Unauthorized
from questline.infra.db import session_factory
from questline.quests import live
from questline.quests.service import history_view
from questline.users import service as users

log = logging.getLogger(__name__)

router = APIRouter(tags=["processing"])

# A stream whose read fails (the database away, no connection to spare) keeps its
# connection and cursor and tries again after this pause, doubled up to the maximum.
READ_RETRY_SECONDS = 0.5
READ_RETRY_MAX_SECONDS = 5.0

STREAM_READS = Counter(
    "questline_live_stream_reads",
    "Database reads of GET /me/stream connections (each time one is woken)",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class Item:
    event_id: int
    type: str
    json: str


@dataclass(frozen=True)
class Page:
    items: list[Item]
    banned: bool
    snapshot: live.Snapshot | None


def _read(user_id: int, after: int) -> Page:
    with session_factory()() as session:
        read = live.read_after(session, user_id=user_id, after=after)
        items = [
            Item(e.event_id, e.type, MyEvent.model_validate(history_view(e)).model_dump_json())
            for e in read.items
        ]
    return Page(items, read.banned, read.snapshot)


@dataclass(frozen=True)
class Opened:
    user_id: int
    valid_until: float
    cursor: int


def _open(token: str, after: int | None) -> Opened:
    with session_factory()() as session:
        user, claims = users.authenticate_claims(session, token)
        cursor = live.newest_event_id(session, user_id=user.user_id) if after is None else after
    return Opened(user.user_id, claims.valid_until, cursor)


async def _messages(opened: Opened) -> AsyncIterator[ServerSentEvent]:
    """The stream's messages until the token expires, the player is banned or the
    client goes (sse-starlette then cancels this generator)."""
    stream_hub = hub()
    watch = stream_hub.watch(opened.user_id, opened.cursor)
    held: live.HeldBack | None = None
    retry = READ_RETRY_SECONDS
    try:
        while True:
            watch.wake.clear()
            try:
                page = await run_in_threadpool(_read, opened.user_id, watch.cursor)
            except Exception as exc:
                log.warning("a live stream's read failed (%s); retrying", exc)
                if opened.valid_until <= time.time():
                    yield ServerSentEvent(comment="closed: the token expired")
                    return
                await asyncio.sleep(retry)
                retry = min(retry * 2, READ_RETRY_MAX_SECONDS)
                continue
            retry = READ_RETRY_SECONDS
            STREAM_READS.inc()
            if page.banned:
                yield ServerSentEvent(comment="closed: the player is banned")
                return
            ids = [i.event_id for i in page.items]
            ready, held = live.settle(ids, page.snapshot, held, now=time.monotonic())
            for item in page.items[:ready]:
                yield ServerSentEvent(data=item.json, event=item.type, id=str(item.event_id))
                watch.cursor = item.event_id
            left = opened.valid_until - time.time()
            if left <= 0:
                yield ServerSentEvent(comment="closed: the token expired")
                return
            if ready == live.PAGE:
                continue  # a long replay: the next page at once
            try:
                if held is not None:
                    held_for = time.monotonic() - held.since
                    async with asyncio.timeout(min(live.MAX_HOLD_SECONDS - held_for, left)):
                        await stream_hub.ended(held.writers)
                else:
                    async with asyncio.timeout(left):
                        await watch.wake.wait()
            except TimeoutError:
                pass
    finally:
        stream_hub.unwatch(watch)


def _heartbeat() -> ServerSentEvent:
    return ServerSentEvent(comment="heartbeat")


STREAM_DOC = """Server-Sent Events: one message per new item of the player's history (`id:`
its event_id, `event:` its type, `data:` the item as in GET /me/events), a `:heartbeat`
comment every 15 s. `Last-Event-ID` (sent by EventSource when it reconnects) or
`?after=<event_id>` replays the items after that one first; without either the stream
starts at the newest item. The stream ends when the token expires or the player is
banned. Browsers' EventSource cannot send headers: pass the token as `?access_token=`
(accepted on this route only; see the README)."""


@router.get(
    "/me/stream",
    response_class=EventSourceResponse,
    description=STREAM_DOC,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the live history"},
        401: {"description": "missing, invalid or expired token"},
        403: {"description": "banned user"},
        422: {"description": "`after` or `Last-Event-ID` is not an event id"},
    },
)
async def my_stream(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    after: Annotated[
        int | None, Query(ge=0, le=MAX_ID, description="replay the items after this event_id")
    ] = None,
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=MAX_ID, description="as `after`; wins over it"),
    ] = None,
    access_token: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="the access token, for browsers' EventSource (which cannot send "
            "headers); the Authorization header wins over it",
        ),
    ] = None,
) -> EventSourceResponse:
    """This player's history as it is recorded."""
    token = credentials.credentials if credentials is not None else access_token
    if not token:
        raise Unauthorized("missing bearer token")
    start = last_event_id if last_event_id is not None else after
    opened = await run_in_threadpool(_open, token, start)
    return EventSourceResponse(
        _messages(opened),
        ping=get_settings().stream_heartbeat_seconds,
        ping_message_factory=_heartbeat,
    )


class RedactAccessToken(logging.Filter):
    """Keeps ?access_token= values out of uvicorn's access log."""

    PATTERN = re.compile(r"(access_token=)[^&\s]*")

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                self.PATTERN.sub(r"\1[redacted]", a) if isinstance(a, str) else a
                for a in record.args
            )
        return True


logging.getLogger("uvicorn.access").addFilter(RedactAccessToken())
