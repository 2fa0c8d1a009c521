"""Celery settings for Questline's workers (`celery -A workers worker`).

The broker is QUESTLINE_BROKER_URL (RabbitMQ, amqp://...), else the Redis server of
QUESTLINE_REDIS_URL; without either (embedded mode) a broker that needs no server:
kombu's SQLAlchemy transport on a SQLite file in the data dir. What differs between
them (queue declarations, transport options) is in workers/broker.py.
"""

from questline.config import get_settings
from workers import broker as _broker

_settings = get_settings()
_broker_settings = _broker.celery_settings(_settings)

broker_url = _broker_settings["broker_url"]
broker_transport = _broker_settings.get("broker_transport")
broker_transport_options = _broker_settings["broker_transport_options"]
broker_connection_timeout = 2
broker_connection_retry_on_startup = True
broker_connection_max_retries = None

# The same queues and routes on every broker (quorum queues on RabbitMQ).
task_default_queue = _broker_settings["task_default_queue"]
task_queues = _broker_settings["task_queues"]
task_routes = _broker_settings["task_routes"]
# RabbitMQ only (workers/broker.py says why; elsewhere Celery's defaults): quorum
# queues, also for queues created on the fly, with topic exchanges so that countdowns
# go through RabbitMQ's delay queues, and the prefetch set per consumer.
task_default_queue_type = _broker_settings.get("task_default_queue_type", "classic")
task_default_exchange_type = _broker_settings.get("task_default_exchange_type", "direct")
task_create_missing_queue_type = _broker_settings.get("task_create_missing_queue_type", "classic")
task_create_missing_queue_exchange_type = _broker_settings.get(
    "task_create_missing_queue_exchange_type"
)
worker_detect_quorum_queues = _broker_settings.get("worker_detect_quorum_queues", True)
broker_native_delayed_delivery_queue_type = _broker_settings.get(
    "broker_native_delayed_delivery_queue_type", "quorum"
)

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
result_backend = None

# Tasks are idempotent (the sign-in row is locked and checked), so they may run twice:
# acknowledge after the work, and put the message back if the worker dies under it.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1

# Flower and `celery events` see tasks as they run.
worker_send_task_events = True
task_send_sent_event = True

worker_hijack_root_logger = False
