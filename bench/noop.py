"""Celery's floor: a no-op task on the same broker settings as Questline's workers.

`celery -A bench.noop worker` (the benchmark starts it itself).
"""

from __future__ import annotations

import os

from celery import Celery

app = Celery("bench-noop")
app.conf.update(
    broker_url=os.environ["QUESTLINE_REDIS_URL"],
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    # The same delivery guarantees as Questline's tasks (celeryconfig.py).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    task_default_queue="bench_noop",
    worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")  # type: ignore[untyped-decorator]  # Celery has no hints
def noop() -> None:
    """Does nothing: what is left is Celery's own cost per message."""
