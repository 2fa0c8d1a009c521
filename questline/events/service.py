"""Recording batches of gameplay events and reading one back. Never commits.

A batch is all or nothing: it is checked whole (validation.py), the per-user limit
must allow it (limits.py), and then every event whose (user, idempotency key) is new is
stored in one statement, stamped with its user's zone as it is now, if each user exists
and the API key is still live (the same statement checks both). A duplicate, in an
earlier request or earlier in the same batch, gets the first event's id and is never
stored or applied again. Stored events wait in the outbox
(processed_at NULL) for the workers, like sign-ins, and each is announced to them after
the commit by the one after-commit hook (questline.outbox.EventsStored), never by hand.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from models.base import utcnow
from questline.config import get_settings
from questline.credentials import service as credentials
from questline.credentials.service import ApiKeyRequired, CallingKey, Scope, has_scope
from questline.errors import Conflict, NotFound
from questline.events import limits, repository, validation
from questline.events.repository import EventKey
from questline.events.validation import EventRejected, NewEvent, RawEvent
from questline.infra.after_commit import after_commit
from questline.outbox import EventsStored


class RecordStatus(enum.StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"


class InputStatus(enum.StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"


@dataclass(frozen=True)
class Recorded:
    """The answer for one event of a batch."""

    idempotency_key: str
    event_id: int
    status: RecordStatus


@dataclass(frozen=True)
class RecordedBatch:
    """The answers in request order; `stored` (event_id, user_id) are the new events (the
    workers are told about them after the commit); `counted` is the batch's share of the rate
    limit, to give back (`refund`) if the commit fails."""

    results: list[Recorded]
    stored: list[tuple[int, int]]
    counted: dict[str, int] = field(default_factory=dict)


def record(
    session: Session, body: object, *, api_key: CallingKey, now: datetime | None = None
) -> RecordedBatch:
    """Check and store a batch sent with `api_key` ({"events": [...]}, as parsed JSON).

    Raises EventRejected (422) naming the first bad event and field, TooManyEvents (429);
    either way nothing is stored or counted.
    """
    now = now or utcnow()
    events = validation.parse_batch(body, now=now, **_rules(api_key))
    return _count_and_store(session, events, api_key=api_key, now=now)


def record_events(
    session: Session,
    events: Sequence[RawEvent],
    *,
    api_key: CallingKey,
    now: datetime | None = None,
) -> RecordedBatch:
    """As `record`, for a batch whose events' fields come apart (RecordEvents: the
    protobuf message is checked as it is, not made into a JSON-like body first)."""
    now = now or utcnow()
    checked = validation.parse_events(events, now=now, **_rules(api_key))
    return _count_and_store(session, checked, api_key=api_key, now=now)


def _rules(api_key: CallingKey) -> dict[str, Any]:
    return {
        "max_age_seconds": get_settings().event_max_age_seconds,
        "backfill": has_scope(api_key, Scope.EVENTS_BACKFILL),
    }


def _count_and_store(
    session: Session, events: list[NewEvent], *, api_key: CallingKey, now: datetime
) -> RecordedBatch:
    try:
        counted = limits.take(Counter(e.user_id for e in events))
    except limits.TooManyEvents:
        # A batch is checked whole before it is counted: an unknown user is 422 first.
        users = {e.user_id for e in events}
        _refuse_unknown_users(events, users - repository.zones_of(session, users).keys())
        raise
    try:
        return _store(session, events, api_key=api_key, now=now, counted=counted)
    except BaseException:
        limits.give_back(counted)
        raise


def _refuse_unknown_users(events: list[NewEvent], missing: Collection[int]) -> None:
    """EventRejected naming the first event whose user is `missing`, if any."""
    if not missing:
        return
    for index, event in enumerate(events):
        if event.user_id in missing:
            raise EventRejected(index, "user_id", f"no user {event.user_id}")


def refund(batch: RecordedBatch) -> None:
    """Give a batch's count back to the rate limit when its transaction did not commit."""
    limits.give_back(batch.counted)


def _store(
    session: Session,
    events: list[NewEvent],
    *,
    api_key: CallingKey,
    now: datetime,
    counted: dict[str, int],
) -> RecordedBatch:
    # The first event of each key in the batch is the one stored; later ones are duplicates.
    firsts: dict[EventKey, NewEvent] = {}
    for event in events:
        firsts.setdefault((event.user_id, event.idempotency_key), event)
    insertion = repository.insert_new(
        session, list(firsts.values()), api_key_id=api_key.key_id, now=now
    )
    if not insertion.key_live:
        # Revoked since this process verified it (credentials.authenticate_remembered).
        credentials.forget(api_key.key_id)
        raise ApiKeyRequired()
    _refuse_unknown_users(events, insertion.missing_users)
    new_ids = insertion.stored
    earlier = repository.ids_by_key(session, firsts.keys() - new_ids.keys())
    if len(new_ids) + len(earlier) != len(firsts):
        # Skipped as a duplicate, yet not found: the first holder vanished in between.
        raise Conflict("events with the same idempotency key were being stored; retry")
    ids = {**earlier, **new_ids}
    results: list[Recorded] = []
    answered: set[EventKey] = set()
    for event in events:
        key = (event.user_id, event.idempotency_key)
        fresh = key in new_ids and key not in answered
        answered.add(key)
        status = RecordStatus.ACCEPTED if fresh else RecordStatus.DUPLICATE
        results.append(Recorded(event.idempotency_key, ids[key], status))
    stored = sorted((event_id, user_id) for (user_id, _), event_id in new_ids.items())
    if stored:
        # Sent once the transaction commits: one drain wake-up for the whole batch.
        after_commit(session, EventsStored(tuple(stored)))
    return RecordedBatch(results=results, stored=stored, counted=counted)


def event_status(session: Session, *, event_id: int) -> dict[str, Any]:
    """A stored input (gameplay event or sign-in) and whether the workers applied it."""
    row = repository.get_input(session, event_id)
    if row is None:
        raise NotFound("event not found")
    return {
        "event_id": row.event_id,
        "user_id": row.user_id,
        "type": row.type,
        "status": InputStatus.PROCESSED if row.processed_at is not None else InputStatus.PENDING,
        "occurred_at": row.occurred_at,
        "created_at": row.created_at,
        "processed_at": row.processed_at,
    }
