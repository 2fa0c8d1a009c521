"""The outbox sweeper: a timer thread in each worker's main process.

Every sweep_interval_seconds it applies sign-ins left unprocessed longer than
sweep_after_seconds (a message lost with a killed worker or a broker outage).
It runs the same code as the task, in its own transactions; many workers may
sweep at once because events are claimed with SKIP LOCKED.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import bootsteps

from questline import outbox
from questline.config import get_settings

log = logging.getLogger(__name__)


class SweeperThread(threading.Thread):
    def __init__(self, interval: float) -> None:
        super().__init__(name="questline-outbox-sweeper", daemon=True)
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        from workers.metrics import observe_applied

        while not self.stopped.wait(self.interval):
            try:
                applied = outbox.sweep()
                observe_applied(applied)
                if applied.inputs:
                    log.info("sweeper applied %d stale sign-ins", len(applied.inputs))
            except Exception:
                log.warning("outbox sweep failed; will try again", exc_info=True)

    def stop(self) -> None:
        self.stopped.set()


class OutboxSweeper(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: SweeperThread | None = None

    def start(self, worker: Any) -> None:
        settings = get_settings()
        if settings.worker_metrics_port:
            from workers.metrics import serve

            serve(settings.worker_metrics_port)
        if not settings.sweeper_enabled:
            log.warning("outbox sweeper disabled (QUESTLINE_SWEEPER_ENABLED=false)")
            return
        self.thread = SweeperThread(settings.sweep_interval_seconds)
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
