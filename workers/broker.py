"""The Celery broker: Redis, RabbitMQ (AMQP) or the embedded SQLite file.

QUESTLINE_BROKER_URL names the broker; without it the broker is the Redis server of
QUESTLINE_REDIS_URL, and without either the embedded SQLite file (README, "Brokers").
Redis stays the cache and rate-limit store whichever broker carries the tasks.

This module holds what differs between them: the queue declarations and transport
settings (celeryconfig.py reads them), the circuit breaker the publisher goes
through, and the check behind the broker part of /readyz.

RabbitMQ, as configured here:
- every task queue is a quorum queue (replicated across the cluster's nodes, always
  durable) bound to a topic exchange of its own name, with the same routes as on Redis;
  queues created on the fly (`celery worker -Q name`) are quorum queues too;
- publisher confirms: a publish returns once the broker has taken the message, and
  fails (rather than losing it silently) when the broker refuses it or does not
  answer within QUESTLINE_BROKER_CONFIRM_TIMEOUT_SECONDS;
- quorum queues have no global QoS: workers detect them and set the prefetch per
  consumer (worker_detect_quorum_queues), still one message per pool process;
- retries with a countdown go through RabbitMQ's delay queues (native delayed
  delivery, which needs the topic exchanges), never wait in a worker's memory;
- no visibility timeout: a message a dead worker held is delivered again as soon
  as RabbitMQ sees its connection close.
Celery's own transient queues (remote control replies, Flower's event queue) are
auto-delete queues, which a quorum queue cannot be: they stay classic and hold no task.
"""

from __future__ import annotations

import threading
from typing import Any, Literal

from kombu.entity import Exchange, Queue

from questline.config import Settings, get_settings
from questline.infra.kv import CircuitBreaker, get_kv, shared_breaker

Kind = Literal["embedded", "redis", "amqp"]

REDIS_SCHEMES = {"redis", "rediss", "redis+socket"}
AMQP_SCHEMES = {"amqp", "amqps", "pyamqp"}

# Every queue Questline declares, and which task goes where (the same on every broker).
# `webhooks` is apart so that receivers never slow the application of events: run a
# worker of its own for it (`celery -A workers worker -Q webhooks`), and the others
# with `-Q sign_ins,questline`. A worker started without -Q consumes all three.
QUEUE_NAMES = ("sign_ins", "questline", "webhooks")
DEFAULT_QUEUE = "questline"
TASK_ROUTES = {
    "questline.process_sign_in": {"queue": "sign_ins"},
    "questline.drain_outbox": {"queue": "sign_ins"},
    "questline.sweep_outbox": {"queue": "questline"},
    "questline.prune": {"queue": "questline"},
    "questline.deliver_webhook": {"queue": "webhooks"},
}
QUORUM = {"x-queue-type": "quorum"}


def kind_of(url: str | None) -> Kind:
    """Which broker a URL names; ValueError for one Questline does not support."""
    if url is None:
        return "embedded"
    scheme = url.split("://", 1)[0].lower()
    if scheme in REDIS_SCHEMES:
        return "redis"
    if scheme in AMQP_SCHEMES:
        return "amqp"
    raise ValueError(
        f"unsupported broker URL scheme {scheme!r} (QUESTLINE_BROKER_URL or "
        "QUESTLINE_REDIS_URL): use redis://... or amqp://..."
    )


def kind() -> Kind:
    """The kind of this process's broker."""
    return kind_of(get_settings().celery_broker_url)


def queues(broker: Kind) -> tuple[Queue, ...]:
    """Questline's queue declarations on `broker`."""
    if broker != "amqp":
        return tuple(Queue(name) for name in QUEUE_NAMES)
    return tuple(
        Queue(name, Exchange(name, type="topic"), routing_key=name, queue_arguments=QUORUM)
        for name in QUEUE_NAMES
    )


def celery_settings(settings: Settings) -> dict[str, Any]:
    """The broker part of celeryconfig.py, for the broker `settings` name."""
    url = settings.celery_broker_url
    broker = kind_of(url)
    common: dict[str, Any] = {
        "task_default_queue": DEFAULT_QUEUE,
        "task_queues": queues(broker),
        "task_routes": TASK_ROUTES,
    }
    if broker == "redis":
        return {
            **common,
            "broker_url": url,
            "broker_transport_options": {
                # A SIGKILLed worker's unacknowledged messages come back after this
                # long. The outbox sweeper applies their inputs much sooner, so it only
                # bounds duplicates. It must exceed the longest retry countdown
                # (workers.tasks.RETRY_BACKOFF_MAX).
                "visibility_timeout": settings.broker_visibility_timeout_seconds,
                # Look for such messages every 5 s (kombu 5.7 defaults to every 10 s,
                # scanning only every tenth time: up to 100 s late). A scan holds a lock
                # in Redis that a worker killed mid-scan leaves behind until it expires
                # (kombu's default: 300 s, holding every restore back): a scan takes
                # milliseconds, so 30 s is ample.
                "unacked_restore_interval": 5,
                "unacked_restore_throttle": 1,
                "unacked_mutex_expire": 30,
                "socket_timeout": 5,
                "socket_connect_timeout": 2,
            },
        }
    if broker == "amqp":
        return {
            **common,
            "broker_url": url,
            "broker_transport_options": {"confirm_publish": True},
            "task_default_queue_type": "quorum",
            "task_default_exchange_type": "topic",
            "task_create_missing_queue_type": "quorum",
            "task_create_missing_queue_exchange_type": "topic",
            "worker_detect_quorum_queues": True,
            "broker_native_delayed_delivery_queue_type": "quorum",
        }
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # kombu's SQLAlchemy transport, polling faster (workers/embedded_broker.py). Its
    # options go to create_engine(), so the Redis ones above must not reach it.
    return {
        **common,
        "broker_url": f"sqlite:///{(settings.data_dir / 'broker.db').resolve()}",
        "broker_transport": "workers.embedded_broker:Transport",
        "broker_transport_options": {},
    }


# --- the publisher's breaker and the readiness check ---------------------------------


def _has_own_server(settings: Settings) -> bool:
    """True when the broker is not the Redis server of the cache (RabbitMQ, or another
    Redis): its failures are not Redis's, and Redis's are not its."""
    url = settings.celery_broker_url
    return url is not None and url != settings.redis_url


def check() -> None:
    """Raise unless the broker answers now (a connection and its handshake, bounded by
    QUESTLINE_BROKER_CONFIRM_TIMEOUT_SECONDS); the embedded broker always does."""
    settings = get_settings()
    url = settings.celery_broker_url
    if url is None:
        return  # embedded: the broker lives in the database
    if not _has_own_server(settings):
        get_kv().ping()  # the cache's Redis, through its breaker
        return
    timeout = settings.broker_confirm_timeout_seconds
    if kind_of(url) == "redis":
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            client.ping()
        finally:
            client.close()
        return
    from kombu.connection import Connection

    connection = Connection(url, connect_timeout=timeout)
    try:
        connection.connect()  # TCP, then AMQP's handshake: both bounded by the timeout
    finally:
        connection.collect()  # no goodbye that could wait on a frozen broker


class BrokerAway(ConnectionError):
    """The broker recently did not answer; not trying for a moment."""


_lock = threading.Lock()
_own_breaker: CircuitBreaker | None = None


def publish_breaker() -> CircuitBreaker:
    """The breaker publishing goes through: with Redis as the broker, the one every
    Redis client of the process shares; with a broker of its own (RabbitMQ), one for
    that broker alone, whose background probe is check()."""
    global _own_breaker
    if not _has_own_server(get_settings()):
        return shared_breaker()
    with _lock:
        if _own_breaker is None:
            _own_breaker = CircuitBreaker(probe=check, name="the broker")
        return _own_breaker


def readiness_check() -> None:
    """The broker part of /readyz: fails at once while the publisher's breaker is open."""
    if _has_own_server(get_settings()) and publish_breaker().is_open:
        raise BrokerAway("the broker did not answer recently; probing it")
    check()
