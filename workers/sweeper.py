"""The outbox sweeper and the webhook timer: timer threads in each worker's main process.

Every sweep_interval_seconds it applies inputs (sign-ins, gameplay events) left
unprocessed longer than sweep_after_seconds (a message lost with a killed worker or a
broker outage).
It runs the same code as the task, in its own transactions; many workers may
sweep at once because events are claimed with SKIP LOCKED.

The webhook timer, every webhook_timer_interval_seconds, sends a task message for each
webhook delivery that is due (a retry whose time has come, a lease a killed worker
left) or whose message looks lost; deliveries are taken with SKIP LOCKED too.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from questline import outbox
from questline.config import get_settings
from questline.webhooks import delivery
from workers.timer import Every

log = logging.getLogger(__name__)


def sweep_once() -> None:
    from workers.metrics import observe_applied

    applied = outbox.sweep()
    observe_applied(applied)
    if applied.inputs:
        log.info("sweeper applied %d stale inputs", len(applied.inputs))


class OutboxSweeper(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: Every | None = None

    def start(self, worker: Any) -> None:
        settings = get_settings()
        if settings.worker_metrics_port:
            from workers.metrics import serve

            serve(settings.worker_metrics_port)
        if not settings.sweeper_enabled:
            log.warning("outbox sweeper disabled (QUESTLINE_SWEEPER_ENABLED=false)")
            return
        self.thread = Every("questline-outbox-sweeper", settings.sweep_interval_seconds, sweep_once)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()


def send_due_deliveries() -> None:
    sent = delivery.enqueue_due()
    if sent:
        log.debug("webhook timer sent %d due deliveries", sent)


class WebhookTimer(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: Every | None = None

    def start(self, worker: Any) -> None:
        settings = get_settings()
        if not settings.sweeper_enabled:
            log.warning("webhook timer disabled (QUESTLINE_SWEEPER_ENABLED=false)")
            return
        self.thread = Every(
            "questline-webhook-timer", settings.webhook_timer_interval_seconds, send_due_deliveries
        )
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
