"""The outbox sweeper: a timer thread in each worker's main process.

Every sweep_interval_seconds it applies inputs (sign-ins, gameplay events) left
unprocessed longer than sweep_after_seconds (a message lost with a killed worker or a
broker outage).
It runs the same code as the task, in its own transactions; many workers may
sweep at once because events are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from questline import outbox
from questline.config import get_settings
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
