"""How long spent rows are kept: refresh tokens, claim idempotency keys, settled
webhook deliveries, events.

`prune` deletes refresh tokens refresh_token_retention_hours after they were
used, revoked or expired, idempotency keys idempotency_retention_hours after their
claim, and delivered or failed webhook deliveries webhook_delivery_retention_days
after they were written. Every worker runs it on a timer of its own
(workers/pruner.py); it is also the Celery task `questline.prune` and the command
`questline prune`. It deletes in small transactions, so it never holds many locks,
and any number of workers may run it at once.

Events only when event_retention_days is set (by default every event is kept):
history entries (quest progress, completions, rewards) stored before the cutoff go
(with the settled webhook deliveries that announced them; one still pending keeps
its entry), and so do processed inputs (sign-ins, gameplay events) that occurred and
were stored before it, unless an active quest still counts them: recompute rebuilds a
quest from every input of its trigger's type inside its starts_at..ends_at window,
so those inputs are kept whatever their age (kept_windows). Pending and
dead-lettered inputs are never deleted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from models.base import utcnow
from questline.catalog.source import Catalog, catalog_source
from questline.config import get_settings
from questline.events import repository as events_repository
from questline.infra import db
from questline.quests import repository as quests_repository
from questline.users import repository as users_repository
from questline.webhooks import repository as webhooks_repository

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Rows (event ids, for events) deleted per transaction.
CHUNK = 5_000


# An event type and the occurred_at range [start, end) of its inputs that a quest
# counts (None: unbounded).
Window = tuple[str, datetime | None, datetime | None]


@dataclass(frozen=True)
class Pruned:
    refresh_tokens: int
    idempotency_keys: int
    events: int = 0
    webhook_deliveries: int = 0


def kept_windows(catalog: Catalog) -> list[Window] | None:
    """The inputs that must outlive the retention: for each active quest, its
    trigger's event type inside its starts_at..ends_at window. None when every input
    must stay (an active quest whose definition cannot be read names no type)."""
    if any(broken.event_type is None for broken in catalog.broken):
        return None
    windows: set[Window] = {(q.trigger.event, q.starts_at, q.ends_at) for q in catalog.quests}
    windows |= {(b.event_type, None, None) for b in catalog.broken if b.event_type}
    # A type some quest counts forever needs no narrower window beside it.
    forever = {t for t, start, end in windows if start is None and end is None}
    return sorted(
        (w for w in windows if w[0] not in forever or w[1:] == (None, None)),
        key=lambda w: (w[0], w[1] is not None, w[1] or EPOCH, w[2] is None, w[2] or EPOCH),
    )


def prune(*, now: datetime | None = None) -> Pruned:
    """Delete refresh tokens and idempotency keys past their retention; how many went."""
    settings = get_settings()
    now = now or utcnow()
    tokens_before = now - timedelta(hours=settings.refresh_token_retention_hours)
    keys_before = now - timedelta(hours=settings.idempotency_retention_hours)
    days = settings.event_retention_days
    deliveries_before = now - timedelta(days=settings.webhook_delivery_retention_days)
    return Pruned(
        events=_prune_events(now - timedelta(days=days)) if days is not None else 0,
        webhook_deliveries=_in_chunks(
            lambda s: webhooks_repository.delete_settled(
                s, written_before=deliveries_before, limit=CHUNK
            )
        ),
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


def _prune_events(before: datetime) -> int:
    """Delete old events (see the module's docstring) CHUNK ids per transaction."""
    with db.transaction() as session:
        first = events_repository.first_event_id(session)
        last = events_repository.last_event_stored_before(session, before)
    if first is None or last is None:
        return 0
    total = 0
    for start in range(first, last + 1, CHUNK):
        with db.transaction() as session:
            # Read in the chunk's transaction: the catalog version is share-locked, so
            # a quest created meanwhile either is seen here or commits after the chunk.
            kept = kept_windows(catalog_source().current(session))
            total += events_repository.delete_old_events(
                session,
                first_id=start,
                last_id=min(start + CHUNK - 1, last),
                before=before,
                kept=kept,
            )
    return total
