"""A daemon thread that runs one job at a fixed interval in a worker's main process."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class Every(threading.Thread):
    """Runs `job` every `interval` seconds (first after `first_after`) until stopped;
    a failed run is logged and the next one comes on time."""

    def __init__(
        self,
        name: str,
        interval: float,
        job: Callable[[], object],
        first_after: float | None = None,
    ) -> None:
        super().__init__(name=name, daemon=True)
        self.interval = interval
        self.first_after = interval if first_after is None else first_after
        self.job = job
        self.stopped = threading.Event()

    def run(self) -> None:
        delay = self.first_after
        while not self.stopped.wait(delay):
            delay = self.interval
            try:
                self.job()
            except Exception:
                log.warning("%s failed; will try again", self.name, exc_info=True)

    def stop(self) -> None:
        self.stopped.set()
