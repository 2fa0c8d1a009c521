"""The pruner: a timer thread of its own in each worker's main process.

Every prune_interval_seconds (first a minute after start, so a worker that restarts
often still prunes) it deletes refresh tokens, claim idempotency keys and (when a
retention is set) events past their retention (questline.retention). Workers may
prune at once: deletes are idempotent.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import bootsteps

from questline import retention
from questline.config import get_settings
from workers.timer import Every

log = logging.getLogger(__name__)


def prune_once() -> None:
    pruned = retention.prune()
    if pruned.refresh_tokens or pruned.idempotency_keys:
        log.info(
            "pruned %d refresh tokens and %d idempotency keys",
            pruned.refresh_tokens,
            pruned.idempotency_keys,
        )
    if pruned.webhook_deliveries:
        log.info("pruned %d settled webhook deliveries", pruned.webhook_deliveries)
    if pruned.events:
        log.info("pruned %d events past their retention", pruned.events)


class Pruner(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.thread: Every | None = None

    def start(self, worker: Any) -> None:
        interval = get_settings().prune_interval_seconds
        self.thread = Every("questline-pruner", interval, prune_once, first_after=min(interval, 60))
        self.thread.start()

    def stop(self, worker: Any) -> None:
        if self.thread is not None:
            self.thread.stop()
