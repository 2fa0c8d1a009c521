"""How long spent rows are kept: refresh tokens and claim idempotency keys.

`prune` deletes refresh tokens refresh_token_retention_hours after they were
used, revoked or expired, and idempotency keys idempotency_retention_hours after
their claim. Every worker runs it on a timer of its own (workers/pruner.py); it is
also the Celery task `questline.prune`. It deletes in small transactions, so it
never holds many locks, and any number of workers may run it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from models.base import utcnow
from questline.config import get_settings
from questline.infra import db
from questline.quests import repository as quests_repository
from questline.users import repository as users_repository

# Rows deleted per transaction.
CHUNK = 5_000


@dataclass(frozen=True)
class Pruned:
    refresh_tokens: int
    idempotency_keys: int


def prune(*, now: datetime | None = None) -> Pruned:
    """Delete refresh tokens and idempotency keys past their retention; how many went."""
    settings = get_settings()
    now = now or utcnow()
    tokens_before = now - timedelta(hours=settings.refresh_token_retention_hours)
    keys_before = now - timedelta(hours=settings.idempotency_retention_hours)
    return Pruned(
        refresh_tokens=_in_chunks(
            lambda s: users_repository.delete_spent_refresh_tokens(
                s, spent_before=tokens_before, limit=CHUNK
            )
        ),
        idempotency_keys=_in_chunks(
            lambda s: quests_repository.purge_idempotency_keys(
                s, older_than=keys_before, limit=CHUNK
            )
        ),
    )


def _in_chunks(delete: Callable[[Session], int]) -> int:
    total = 0
    while True:
        with db.transaction() as session:
            deleted = delete(session)
        total += deleted
        if deleted < CHUNK:
            return total
