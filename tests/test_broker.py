"""The broker part of the configuration (workers/broker.py): Redis or RabbitMQ by URL,
quorum queues and publisher confirms on RabbitMQ, the same routes on both, and the
queues the workers really declare on the machine's RabbitMQ."""

from __future__ import annotations

import pytest

from harness.services import rabbitmqctl
from questline.config import Settings
from tests import support
from workers import broker

AMQP = "amqp://guest:guest@127.0.0.1:5672/somewhere"
REDIS = "redis://127.0.0.1:6379/3"


def settings(**values: str | None) -> Settings:
    return Settings(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        (None, "embedded"),
        (REDIS, "redis"),
        ("rediss://cache.example:6380/0", "redis"),
        (AMQP, "amqp"),
        ("amqps://user:pw@mq.example:5671/prod", "amqp"),
        ("pyamqp://guest@localhost//", "amqp"),
    ],
)
def test_the_broker_is_named_by_its_url(url: str | None, kind: str) -> None:
    assert broker.kind_of(url) == kind


def test_a_broker_questline_does_not_support_is_refused_with_the_variable_to_fix() -> None:
    with pytest.raises(ValueError, match="QUESTLINE_BROKER_URL"):
        broker.kind_of("sqs://queue.example")


def test_the_broker_url_defaults_to_the_redis_url_and_an_empty_one_counts_as_unset() -> None:
    assert settings(redis_url=REDIS).celery_broker_url == REDIS
    assert settings(redis_url=REDIS, broker_url="").celery_broker_url == REDIS
    assert settings(redis_url=REDIS, broker_url=AMQP).celery_broker_url == AMQP
    # (The test run's environment names a Redis: None overrides it.)
    assert settings(redis_url=None, broker_url=AMQP).celery_broker_url == AMQP
    assert not settings(redis_url=None, broker_url=AMQP).embedded
    assert settings(redis_url=None, broker_url="").embedded
    assert settings(redis_url=None).celery_broker_url is None


def test_on_rabbitmq_every_queue_is_a_quorum_queue_with_the_routes_of_redis() -> None:
    on_redis = broker.celery_settings(settings(redis_url=REDIS))
    on_rabbitmq = broker.celery_settings(settings(redis_url=REDIS, broker_url=AMQP))
    assert on_rabbitmq["broker_url"] == AMQP
    assert on_rabbitmq["task_routes"] == on_redis["task_routes"]
    assert on_rabbitmq["task_default_queue"] == on_redis["task_default_queue"]
    assert [q.name for q in on_rabbitmq["task_queues"]] == [q.name for q in on_redis["task_queues"]]
    for queue in on_rabbitmq["task_queues"]:
        assert queue.queue_arguments == {"x-queue-type": "quorum"}
        assert queue.durable
        # Topic exchanges: native delayed delivery (retry countdowns) needs them.
        assert (queue.exchange.name, queue.exchange.type) == (queue.name, "topic")
        assert queue.routing_key == queue.name
    # Queues made on the fly (`worker -Q name`) are quorum queues too.
    assert on_rabbitmq["task_create_missing_queue_type"] == "quorum"
    assert on_rabbitmq["task_create_missing_queue_exchange_type"] == "topic"
    assert on_rabbitmq["worker_detect_quorum_queues"] is True
    assert on_rabbitmq["broker_transport_options"] == {"confirm_publish": True}
    # No Redis option (the visibility timeout above all) reaches the AMQP transport.
    redis_options = on_redis["broker_transport_options"]
    assert "visibility_timeout" in redis_options
    # A dead worker's messages are looked for every 5 s, not every 100 s as kombu 5.7
    # would (a sweep every 10 s, scanning only every tenth time).
    sweep = redis_options["unacked_restore_interval"] * redis_options["unacked_restore_throttle"]
    assert sweep <= 5
    # ... and a worker killed while it scans holds the others back for 30 s, not 300 s.
    assert redis_options["unacked_mutex_expire"] <= 30
    for queue in on_redis["task_queues"]:
        assert not queue.queue_arguments


def test_the_workers_declare_quorum_queues_on_rabbitmq(
    rabbitmq: support.Broker, rabbitmq_suite_worker: support.SuiteWorker
) -> None:
    rabbitmq_suite_worker.running()
    vhost = rabbitmq.url.rsplit("/", 1)[1] if rabbitmq.url else "/"
    out = rabbitmqctl(
        "list_queues", "-p", vhost, "-q", "--no-table-headers", "name", "type", "durable"
    )
    declared = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    for name in broker.QUEUE_NAMES:
        assert declared.get(name) == ["quorum", "true"], (name, declared)
