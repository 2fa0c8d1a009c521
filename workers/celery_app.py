"""The Celery app, configured from celeryconfig.py."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from questline.infra import db

app = Celery("questline")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@signals.worker_process_init.connect
def _after_fork(**_kwargs: Any) -> None:
    # A pool child must not reuse the connections it inherited from its parent.
    db.after_fork()


# Importing these registers them: the after-commit sender (drains announce full
# batches through it), and the timer threads of every worker's main process.
from workers import pruner, publish, sweeper  # noqa: E402, F401

app.steps["worker"].add(sweeper.OutboxSweeper)
app.steps["worker"].add(pruner.Pruner)
app.steps["worker"].add(sweeper.WebhookTimer)
