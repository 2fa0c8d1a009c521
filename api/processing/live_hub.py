"""The open live streams of one process (GET /me/stream, api/processing/live.py) and
what wakes them.

Each open stream waits on an asyncio event of its own; nothing else runs for it while
nothing happens but the heartbeat comment. One hub per process (per event loop) sets
those events:
- one Redis pub/sub subscription carries LiveUpdate messages from every process that
  commits history (the API's sign-ins and claims, the workers' drains), published after
  the commit by workers/publish.py; in the embedded mode (no Redis) the process's own
  commits are handed over in-process;
- a re-check every stream_recheck_seconds asks the database, in a few statements for
  all the process's streams, which players have items after their stream's cursor or
  are banned, so a lost message (Redis restarted, the breaker open, the embedded
  worker in its own process) only delays an item.
It also tells streams that hold items back (questline.quests.live.settle) when the
transactions they wait for have ended: one poll of PostgreSQL for all of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio
from fastapi.concurrency import run_in_threadpool
from prometheus_client import Gauge, Histogram

from api.observability import REGISTRY
from questline.config import get_settings
from questline.infra.db import session_factory
from questline.quests import live

log = logging.getLogger(__name__)

# The embedded worker runs in a child process with no Redis to publish on: its items
# reach the streams by the re-check, so that runs at least this often there (SQLite,
# one machine, a handful of streams).
EMBEDDED_RECHECK_SECONDS = 0.5
# While streams hold items back (a transaction that may commit an earlier item of the
# player is still running), the hub asks PostgreSQL this often which transactions still
# run: one small query for every waiting stream of the process.
HOLD_POLL_SECONDS = 0.02
RESUBSCRIBE_MAX_SECONDS = 10.0

OPEN_STREAMS = Gauge(
    "questline_live_streams_open", "GET /me/stream connections open", registry=REGISTRY
)
STREAMS_HOLDING = Gauge(
    "questline_live_streams_holding",
    "GET /me/stream connections holding items back until transactions end",
    registry=REGISTRY,
)
HOLD_SECONDS = Histogram(
    "questline_live_hold_seconds",
    "How long a GET /me/stream connection waited for transactions to end before sending",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)


class Watch:
    """One open stream: its player, the last event_id it sent, and its wake-up call."""

    __slots__ = ("user_id", "cursor", "wake")

    def __init__(self, user_id: int, cursor: int) -> None:
        self.user_id = user_id
        self.cursor = cursor
        self.wake = asyncio.Event()


class Hub:
    """The open streams of one event loop and the two things that wake them."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.watches: dict[int, set[Watch]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Streams waiting for transactions to end: their futures and those transactions.
        self._holds: dict[asyncio.Future[None], frozenset[int]] = {}
        self._poller: asyncio.Task[None] | None = None

    def start(self) -> None:
        settings = get_settings()
        self._spawn(self._recheck_forever())
        if settings.redis_url is None:
            live.listen_locally(self._from_any_thread)
        else:
            self._spawn(self._subscribe_forever(settings.redis_url))

    def _spawn(self, work: Any) -> None:
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def watch(self, user_id: int, cursor: int) -> Watch:
        watch = Watch(user_id, cursor)
        self.watches.setdefault(user_id, set()).add(watch)
        OPEN_STREAMS.inc()
        return watch

    def unwatch(self, watch: Watch) -> None:
        watches = self.watches.get(watch.user_id)
        if watches is not None and watch in watches:
            watches.discard(watch)
            OPEN_STREAMS.dec()
            if not watches:
                del self.watches[watch.user_id]

    def wake(self, user_ids: Iterable[int]) -> None:
        for user_id in user_ids:
            for watch in self.watches.get(user_id, ()):
                watch.wake.set()

    def wake_all(self) -> None:
        self.wake(list(self.watches))

    async def ended(self, writers: frozenset[int]) -> None:
        """Return once none of these transactions is running any more."""
        done: asyncio.Future[None] = self.loop.create_future()
        self._holds[done] = writers
        if self._poller is None or self._poller.done():
            self._poller = self.loop.create_task(self._poll_transactions())
        STREAMS_HOLDING.inc()
        started = time.monotonic()
        try:
            await done
        finally:
            HOLD_SECONDS.observe(time.monotonic() - started)
            STREAMS_HOLDING.dec()
            self._holds.pop(done, None)

    async def _poll_transactions(self) -> None:
        while self._holds:
            await asyncio.sleep(HOLD_POLL_SECONDS)
            try:
                running = await run_in_threadpool(_running_transactions)
            except Exception as exc:  # the streams give up holding after MAX_HOLD_SECONDS
                log.warning("live streams: cannot read running transactions (%s)", exc)
                continue
            for done, writers in list(self._holds.items()):
                if not writers & running and not done.done():
                    done.set_result(None)

    def _from_any_thread(self, user_ids: tuple[int, ...]) -> None:
        try:
            self.loop.call_soon_threadsafe(self.wake, user_ids)
        except RuntimeError:  # the loop has closed: this hub is gone
            live.stop_listening_locally(self._from_any_thread)

    async def _recheck_forever(self) -> None:
        settings = get_settings()
        interval = settings.stream_recheck_seconds
        if settings.embedded:
            interval = min(interval, EMBEDDED_RECHECK_SECONDS)
        while True:
            await asyncio.sleep(interval)
            if not self.watches:
                continue
            cursors = {u: min(w.cursor for w in ws) for u, ws in self.watches.items()}
            try:
                found = await run_in_threadpool(_needs_attention, cursors)
            except Exception as exc:  # the database is away: the next round tries again
                log.warning("live streams re-check failed (%s: %s)", type(exc).__name__, exc)
                continue
            self.wake(found)

    async def _subscribe_forever(self, url: str) -> None:
        channel = live.channel(url)
        delay = 0.5
        while True:
            client = redis.asyncio.Redis.from_url(
                url, health_check_interval=15, socket_connect_timeout=2, socket_keepalive=True
            )
            try:
                async with client.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(channel)
                    # Whatever was published while this process was not subscribed.
                    self.wake_all()
                    delay = 0.5
                    while True:
                        message = await pubsub.get_message(timeout=30)
                        if message is not None and message["type"] == "message":
                            self.wake(live.decode(message["data"]))
            except Exception as exc:
                log.warning(
                    "live updates: Redis subscription lost (%s: %s); streams rely on the "
                    "re-check until it is back",
                    type(exc).__name__,
                    exc,
                )
            finally:
                await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESUBSCRIBE_MAX_SECONDS)


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """This event loop's hub, started by the first stream."""
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
        found.start()
    return found


def _running_transactions() -> frozenset[int]:
    with session_factory()() as session:
        return live.running_transactions(session)


def _needs_attention(cursors: Mapping[int, int]) -> set[int]:
    with session_factory()() as session:
        return live.needs_attention(session, cursors)
