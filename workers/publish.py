"""Publishing the messages that wake workers for stored inputs (sign-ins, gameplay events),
off the request path.

Domain code queues what happened on its session (questline.outbox: SignInStored,
EventsStored, SignInReplayed, MoreSignInsWaiting); after the commit, the one after-commit hook
(questline.infra.after_commit) hands each message to this module's sender, which
only puts it on a bounded queue. One thread per process publishes from that queue,
on a broker connection of its own. So a slow or frozen broker never holds an answer:
the queue absorbs a burst, a full queue drops messages, and publishing goes through
the broker's circuit breaker (workers.broker.publish_breaker: with Redis as the broker
the process's Redis breaker, with RabbitMQ one of its own), so while the broker does
not answer the thread drops messages at once instead of waiting out a timeout for
each. Dropping is safe: the input is already durable, and the sweeper applies it.
On RabbitMQ every publish waits for the broker's confirm, at most
QUESTLINE_BROKER_CONFIRM_TIMEOUT_SECONDS. A connection that worked before and fails
(a broker restarted while this process was idle) is replaced and the publish tried
once more before the breaker opens.

Catalog writes (questline.catalog.cache.CatalogChanged) are also published here, on the
Redis channel CATALOG_CHANNEL, after this process has noted the new version: the gRPC
server's WatchCatalog streams wake on it (they also poll the version, so a lost
message only delays them).

Importing this module registers the sender; the API (api/factory.py), the workers
(workers/celery_app.py) and the CLI import it.

By default (with Redis) an input does not get a message of its own: one
`questline.drain_outbox` wake-up is sent if none is pending (a batch from POST
/events is one message, so it costs one too), and the worker that takes it applies
every pending input in batches. A Redis flag marks "a wake-up is queued and no drain
has cleared the flag since"; the drain lingers drain_linger_seconds (inputs meanwhile
join it), then clears the flag before it looks at the outbox, so an input committed
before the flag was seen is always found either by that drain or by the one its own
wake-up starts.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from questline.catalog import cache
from questline.catalog.cache import CatalogChanged
from questline.config import get_settings
from questline.infra import after_commit
from questline.infra.kv import KeyValueError, get_kv
from questline.outbox import EventsStored, MoreSignInsWaiting, SignInReplayed, SignInStored
from questline.quests import live
from questline.webhooks.service import DeliveriesQueued

log = logging.getLogger(__name__)

WAKEUP_KEY = "ql:outbox:wakeup-pending"
# Redis pub/sub channel of catalog writes: the message is the new catalog version.
CATALOG_CHANNEL = "ql:catalog:changed"

# Messages waiting for the publishing thread. Beyond this a burst during a broker
# outage is dropped rather than held in memory: the sweeper has every sign-in anyway.
QUEUE_SIZE = 10_000
# Messages taken from the queue at once: a batch of sign-ins needs one wake-up.
TAKE_AT_ONCE = 500

# User ids in one live-update PUBLISH (a batch of drains can touch thousands).
LIVE_IDS_PER_MESSAGE = 1000

Message = (
    SignInStored
    | EventsStored
    | SignInReplayed
    | MoreSignInsWaiting
    | CatalogChanged
    | live.LiveUpdate
    | DeliveriesQueued
)
# One publish on the given kombu producer (the publishing thread's connection).
Send = Callable[[Any], None]


def batching() -> bool:
    """True when sign-ins wake a batch drain rather than sending one message each. The
    wake-up flag lives in Redis, whichever the broker: without Redis, one message each."""
    settings = get_settings()
    return settings.sign_in_dispatch == "batch" and settings.redis_url is not None


class Publisher:
    """A bounded queue and the one thread per process that publishes from it."""

    def __init__(self, capacity: int = QUEUE_SIZE) -> None:
        self.capacity = capacity
        self._reset()

    def _reset(self) -> None:
        # Also run in a forked child, which has neither the parent's thread nor its lock.
        self._lock = threading.Lock()
        self._queue: queue.Queue[Message] | None = None
        self.failures = 0  # messages not published (dropped or failed), ever
        self._last_drop_log = 0.0
        # The publishing thread's broker connection and producer (a child forgets the
        # parent's without closing it: the socket is the parent's).
        self._connection: Any = None
        self._producer: Any = None

    def submit(self, message: Message) -> None:
        """Hand a message to the publishing thread; never blocks (drops when full)."""
        try:
            self._running_queue().put_nowait(message)
        except queue.Full:
            self._dropped(1, "the publish queue is full")

    def flush(self, timeout: float) -> bool:
        """Wait until every message submitted so far was handled (published or dropped);
        False if that takes longer than `timeout` seconds."""
        q = self._running_queue()
        deadline = time.monotonic() + timeout
        with q.all_tasks_done:
            while q.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                q.all_tasks_done.wait(remaining)
        return True

    def _running_queue(self) -> queue.Queue[Message]:
        q = self._queue
        if q is None:
            with self._lock:
                if self._queue is None:
                    self._queue = queue.Queue(self.capacity)
                    threading.Thread(
                        target=self._run,
                        args=(self._queue,),
                        name="questline-publisher",
                        daemon=True,
                    ).start()
                q = self._queue
        return q

    def _run(self, q: queue.Queue[Message]) -> None:
        while True:
            batch = [q.get()]
            while len(batch) < TAKE_AT_ONCE:
                try:
                    batch.append(q.get_nowait())
                except queue.Empty:
                    break
            try:
                self._publish(batch)
            except Exception:
                log.exception("publishing failed")
            finally:
                for _ in batch:
                    q.task_done()

    def _publish(self, batch: Sequence[Message]) -> None:
        sends: list[Send] = []
        wake = False
        catalog_versions = [m.version for m in batch if isinstance(m, CatalogChanged)]
        if catalog_versions:
            announce_catalog(max(catalog_versions))
        watched: set[int] = set()
        for message in batch:
            if isinstance(message, CatalogChanged):
                continue
            if isinstance(message, live.LiveUpdate):
                watched.update(message.user_ids)
            elif isinstance(message, SignInReplayed):
                sends.append(_process_sign_in_sender(message.sign_in_id, None))
            elif isinstance(message, SignInStored) and not batching():
                sends.append(_process_sign_in_sender(message.sign_in_id, message.user_id))
            elif isinstance(message, DeliveriesQueued):
                sends.extend(_deliver_webhook_sender(d, w) for d, w in message.deliveries)
            elif isinstance(message, EventsStored) and not batching():
                sends.extend(_process_sign_in_sender(e, u) for e, u in message.events)
            else:  # stored inputs in batch mode, or more inputs waiting
                wake = True
        if wake:
            sends.insert(0, wake_drainer)
        self._send_all(sends)
        if watched:
            # After the wake-ups: a stream's delay matters less than a drain's.
            _announce_live(sorted(watched))

    def _send_all(self, sends: Sequence[Send]) -> None:
        from workers.broker import publish_breaker

        breaker = publish_breaker()
        for done, send in enumerate(sends):
            if not breaker.allow():
                self._dropped(len(sends) - done, "the broker is not answering")
                return
            try:
                self._send(send)
            except Exception as exc:
                # Kombu's publish has its own timeouts (socket, confirm); one failure
                # opens the breaker so the rest of the outage costs nothing.
                breaker.failed()
                log.warning("could not publish (%s: %s)", type(exc).__name__, exc)
                self._dropped(len(sends) - done, "the broker is away")
                return
            breaker.succeeded()

    def _send(self, send: Send) -> None:
        """`send` on this thread's connection; once more on a new connection if one
        that had worked before fails (the broker restarted while we were idle)."""
        reused = self._producer is not None
        try:
            send(self._current_producer())
        except Exception:
            self._disconnect()
            if not reused:
                raise
            send(self._current_producer())

    def _current_producer(self) -> Any:
        if self._producer is None:
            from workers.celery_app import app

            connection = app.connection_for_write()
            try:
                connection.connect()  # one attempt, bounded by broker_connection_timeout
                self._producer = app.amqp.Producer(connection)
            except BaseException:
                connection.collect()
                raise
            self._connection = connection
        return self._producer

    def _disconnect(self) -> None:
        connection, self._connection, self._producer = self._connection, None, None
        if connection is not None:
            try:
                connection.collect()  # no goodbye that could wait on a frozen broker
            except Exception:
                log.debug("closing the broker connection failed", exc_info=True)

    def _dropped(self, count: int, why: str) -> None:
        with self._lock:
            self.failures += count
        now = time.monotonic()
        if now - self._last_drop_log > 10:  # an outage must not flood the log
            self._last_drop_log = now
            log.warning(
                "%d message(s) not published: %s; the sweeper applies the inputs, "
                "and open streams find their items at their next re-check",
                count,
                why,
            )


def publish_options(producer: Any) -> dict[str, Any]:
    """apply_async options for the publishing thread: its producer, no retries (the
    sweeper is the retry), and the confirm timeout (RabbitMQ; ignored by Redis)."""
    return {
        "producer": producer,
        "retry": False,
        "confirm_timeout": get_settings().broker_confirm_timeout_seconds,
    }


def _process_sign_in_sender(event_id: int, user_id: int | None) -> Send:
    def send(producer: Any) -> None:
        from workers.tasks import process_sign_in

        process_sign_in.apply_async((event_id,), {"user_id": user_id}, **publish_options(producer))

    return send


_announcer: list[redis.Redis] = []  # this process's client for announcements (one)


def announce_catalog(version: int) -> None:
    """Tell the gRPC server's watchers that the catalog is at `version` (best-effort).

    A client of its own, outside the store's circuit breaker: a catalog write is rare,
    its announcement is only a hint (the watchers poll the version too), and a failed
    one must not switch the process's cache and limits off Redis for a while."""
    url = get_settings().redis_url
    if url is None:
        return  # embedded: no gRPC server to tell
    try:
        if not _announcer:
            _announcer.append(
                redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
            )
        _announcer[0].publish(CATALOG_CHANNEL, str(version))
    except (redis.RedisError, OSError) as exc:
        log.warning("catalog version %d not announced (%s); watchers poll it", version, exc)


def _catalog_written(message: CatalogChanged) -> None:
    cache.note_version(message.version)  # this process's cache first, at once
    publisher.submit(message)


def _announce_live(user_ids: Sequence[int]) -> None:
    """Wake these players' streams in every API process: Redis pub/sub, through the
    store's circuit breaker (Redis, whichever the broker). A lost one only delays: each
    stream re-checks the database periodically."""
    url = get_settings().redis_url
    assert url is not None  # the embedded mode delivers in-process (send_live_update)
    for i in range(0, len(user_ids), LIVE_IDS_PER_MESSAGE):
        try:
            get_kv().publish(live.channel(url), live.encode(user_ids[i : i + LIVE_IDS_PER_MESSAGE]))
        except KeyValueError as exc:
            log.debug("live updates not announced (%s); streams re-check", exc)
            return


def send_live_update(message: live.LiveUpdate) -> None:
    """The sender of LiveUpdate: over Redis pub/sub to every API process (from the
    publishing thread, batched), or in the embedded mode to this process's streams."""
    if get_settings().embedded:
        live.deliver_locally(message)
    else:
        publisher.submit(message)


def _deliver_webhook_sender(delivery_id: int, webhook_id: int) -> Send:
    def send(producer: Any) -> None:
        from workers.tasks import deliver_webhook

        deliver_webhook.apply_async(
            (delivery_id,), {"webhook_id": webhook_id}, **publish_options(producer)
        )

    return send


def wake_drainer(producer: Any = None) -> None:
    """Queue a drain_outbox wake-up unless one is queued whose drain has not cleared the
    flag; on `producer`, or else on a connection from the app's pool."""
    from workers.tasks import drain_outbox

    ttl_ms = int(get_settings().wakeup_ttl_seconds * 1000)
    try:
        if not get_kv().add(WAKEUP_KEY, "1", ttl_ms):
            return  # a queued drain will find these sign-ins
    except KeyValueError:
        pass  # no flag: wake anyway, a spare wake-up costs one empty query
    try:
        drain_outbox.apply_async(**publish_options(producer))
    except Exception:
        # Let the next sign-in try again instead of waiting for the flag to expire.
        clear_wakeup()
        raise


def clear_wakeup() -> None:
    """Called by a drain before it looks at the outbox: later sign-ins wake a new one."""
    try:
        get_kv().delete(WAKEUP_KEY)
    except KeyValueError:
        pass  # the flag expires after wakeup_ttl_seconds anyway


publisher = Publisher()
os.register_at_fork(after_in_child=publisher._reset)
os.register_at_fork(after_in_child=_announcer.clear)
after_commit.register(SignInStored, publisher.submit)
after_commit.register(EventsStored, publisher.submit)
after_commit.register(SignInReplayed, publisher.submit)
after_commit.register(MoreSignInsWaiting, publisher.submit)
after_commit.register(CatalogChanged, _catalog_written)
after_commit.register(live.LiveUpdate, send_live_update)
after_commit.register(DeliveriesQueued, publisher.submit)
