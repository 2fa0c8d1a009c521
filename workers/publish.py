"""Publishing the messages that wake workers for stored inputs (sign-ins, gameplay events),
off the request path.

Domain code queues what happened on its session (questline.outbox: SignInStored,
EventsStored, SignInReplayed, MoreSignInsWaiting); after the commit, the one after-commit hook
(questline.infra.after_commit) hands each message to this module's sender, which
only puts it on a bounded queue. One thread per process publishes from that queue.
So a slow or frozen broker never holds an answer: the queue absorbs a burst, a full
queue drops messages, and publishing goes through the process's Redis circuit
breaker (questline.infra.kv.shared_breaker), so while Redis does not answer the thread
drops messages at once instead of waiting out a socket timeout for each. Dropping
is safe: the input is already durable, and the sweeper applies it.

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

from questline.config import get_settings
from questline.infra import after_commit
from questline.infra.kv import KeyValueError, get_kv, shared_breaker
from questline.outbox import EventsStored, MoreSignInsWaiting, SignInReplayed, SignInStored
from questline.webhooks.service import DeliveriesQueued

log = logging.getLogger(__name__)

WAKEUP_KEY = "ql:outbox:wakeup-pending"

# Messages waiting for the publishing thread. Beyond this a burst during a broker
# outage is dropped rather than held in memory: the sweeper has every sign-in anyway.
QUEUE_SIZE = 10_000
# Messages taken from the queue at once: a batch of sign-ins needs one wake-up.
TAKE_AT_ONCE = 500

Message = SignInStored | EventsStored | SignInReplayed | MoreSignInsWaiting | DeliveriesQueued


def batching() -> bool:
    """True when sign-ins wake a batch drain rather than sending one message each."""
    settings = get_settings()
    return settings.sign_in_dispatch == "batch" and not settings.embedded


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
        sends: list[Callable[[], None]] = []
        wake = False
        for message in batch:
            if isinstance(message, SignInReplayed):
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
        breaker = shared_breaker()
        for done, send in enumerate(sends):
            if not breaker.allow():
                self._dropped(len(sends) - done, "Redis is not answering")
                return
            try:
                send()
            except Exception as exc:
                # Kombu's publish has its own socket timeouts; one failure opens the
                # breaker so the rest of the outage costs nothing.
                breaker.failed()
                log.warning("could not publish (%s: %s)", type(exc).__name__, exc)
                self._dropped(len(sends) - done, "the broker is away")
                return

    def _dropped(self, count: int, why: str) -> None:
        with self._lock:
            self.failures += count
        now = time.monotonic()
        if now - self._last_drop_log > 10:  # an outage must not flood the log
            self._last_drop_log = now
            log.warning(
                "%d wake-up message(s) not published: %s; the sweeper applies them", count, why
            )


def _process_sign_in_sender(event_id: int, user_id: int | None) -> Callable[[], None]:
    def send() -> None:
        from workers.tasks import process_sign_in

        process_sign_in.apply_async((event_id,), {"user_id": user_id}, retry=False)

    return send


def _deliver_webhook_sender(delivery_id: int, webhook_id: int) -> Callable[[], None]:
    def send() -> None:
        from workers.tasks import deliver_webhook

        deliver_webhook.apply_async((delivery_id,), {"webhook_id": webhook_id}, retry=False)

    return send


def wake_drainer() -> None:
    """Queue a drain_outbox wake-up unless one is queued whose drain has not cleared the flag."""
    from workers.tasks import drain_outbox

    ttl_ms = int(get_settings().wakeup_ttl_seconds * 1000)
    try:
        if not get_kv().add(WAKEUP_KEY, "1", ttl_ms):
            return  # a queued drain will find these sign-ins
    except KeyValueError:
        pass  # no flag: wake anyway, a spare wake-up costs one empty query
    try:
        drain_outbox.apply_async(retry=False)
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
after_commit.register(SignInStored, publisher.submit)
after_commit.register(EventsStored, publisher.submit)
after_commit.register(SignInReplayed, publisher.submit)
after_commit.register(MoreSignInsWaiting, publisher.submit)
after_commit.register(DeliveriesQueued, publisher.submit)
