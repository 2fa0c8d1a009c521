"""Celery settings for Questline's workers (`celery -A workers worker`).

The broker is QUESTLINE_REDIS_URL; without it (embedded mode) a broker that needs
no server: kombu's SQLAlchemy transport on a SQLite file in the data dir.
"""

from kombu import Queue

from questline.config import get_settings

_settings = get_settings()

# A SIGKILLed worker's unacknowledged messages come back after this long. The
# outbox sweeper applies their sign-ins much sooner, so it only bounds duplicates.
# It must exceed the longest retry countdown (workers.tasks.RETRY_BACKOFF_MAX).
VISIBILITY_TIMEOUT = _settings.broker_visibility_timeout_seconds

if _settings.redis_url:
    broker_url = _settings.redis_url
    broker_transport_options = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "socket_timeout": 5,
        "socket_connect_timeout": 2,
    }
else:
    _settings.data_dir.mkdir(parents=True, exist_ok=True)
    # kombu's SQLAlchemy transport, polling faster (workers/embedded_broker.py). Its
    # options go to create_engine(), so the Redis ones above must not reach it.
    broker_url = f"sqlite:///{(_settings.data_dir / 'broker.db').resolve()}"
    broker_transport = "workers.embedded_broker:Transport"
    broker_transport_options = {}
broker_connection_timeout = 2
broker_connection_retry_on_startup = True
broker_connection_max_retries = None

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

task_default_queue = "questline"
# `webhooks` is apart so that receivers never slow the application of events: run a
# worker of its own for it (`celery -A workers worker -Q webhooks`), and the others
# with `-Q sign_ins,questline`. A worker started without -Q consumes all three.
task_queues = (Queue("sign_ins"), Queue("questline"), Queue("webhooks"))
task_routes = {
    "questline.process_sign_in": {"queue": "sign_ins"},
    "questline.drain_outbox": {"queue": "sign_ins"},
    "questline.sweep_outbox": {"queue": "questline"},
    "questline.prune": {"queue": "questline"},
    "questline.deliver_webhook": {"queue": "webhooks"},
}

# Flower and `celery events` see tasks as they run.
worker_send_task_events = True
task_send_sent_event = True

worker_hijack_root_logger = False
