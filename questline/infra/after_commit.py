"""What must follow a commit, queued on the session and sent by one hook.

Domain code calls `after_commit(session, message)` inside its transaction, where
`message` is a small frozen dataclass saying what happened (a sign-in was stored,
the catalog changed). When the session's outermost transaction commits, one
SQLAlchemy `after_commit` listener hands each queued message, in order, to the
sender registered for its type. A rollback discards the messages (a rolled-back
savepoint discards those queued inside it), so nothing is announced that was not
stored, and no caller can forget to announce what was.

Senders are registered by the process at start: the API and the workers register
the broker publisher (workers/publish.py), the catalog registers its in-process
cache action. A message with no sender is dropped: everything sent this way is
best-effort by design (the outbox sweeper and the catalog version carry
correctness). Senders run in the committing thread right after the commit, so
they must return at once (the publisher only hands the message to its own thread).

A message type may ask the committing thread to wait before it goes on (and so
before the route answers): a `hold_after_commit` attribute, in seconds. The thread
waits once, after every message of the commit was sent, for the longest of them (the
catalog's read lease: questline.catalog.cache).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

log = logging.getLogger(__name__)

M = TypeVar("M")

_PENDING = "questline.after_commit"
_senders: dict[type, Callable[[Any], None]] = {}


def register(kind: type[M], sender: Callable[[M], None]) -> Callable[[M], None] | None:
    """Send every committed message of type `kind` with `sender`; the sender it replaces."""
    previous = _senders.get(kind)
    _senders[kind] = sender
    return previous


def unregister(kind: type) -> None:
    """Stop sending messages of type `kind`: they are dropped after commit."""
    _senders.pop(kind, None)


def after_commit(session: Session, message: object) -> None:
    """Send `message` once the session's current transaction commits; never if it rolls back."""
    pending: list[tuple[SessionTransaction | None, object]] = session.info.setdefault(_PENDING, [])
    pending.append((session.get_nested_transaction(), message))


def pending(session: Session) -> list[object]:
    """The messages queued on the session and not yet sent (for tests and checks)."""
    return [message for _, message in session.info.get(_PENDING, [])]


@event.listens_for(Session, "after_commit")
def _send(session: Session) -> None:
    if session.get_nested_transaction() is not None:
        return  # a savepoint released: the outermost transaction has not committed yet
    hold = 0.0
    for _, message in session.info.pop(_PENDING, []):
        sender = _senders.get(type(message))
        if sender is None:
            log.debug("no sender for %r in this process; dropped", message)
            continue
        try:
            sender(message)
        except Exception:
            # The commit stands; a lost announcement only delays (see the module doc).
            log.warning("could not send %r after commit", message, exc_info=True)
        hold = max(hold, float(getattr(message, "hold_after_commit", 0.0)))
    if hold > 0:
        time.sleep(hold)


@event.listens_for(Session, "after_soft_rollback")
def _discard(session: Session, previous_transaction: SessionTransaction) -> None:
    queued = session.info.get(_PENDING)
    if not queued:
        return
    if not previous_transaction.nested:
        session.info.pop(_PENDING, None)
        return
    # A savepoint rolled back: drop what was queued inside it (or inside savepoints in it).
    queued[:] = [item for item in queued if not _within(item[0], previous_transaction)]


@event.listens_for(Session, "after_transaction_end")
def _forget(session: Session, transaction: SessionTransaction) -> None:
    # The outermost transaction ended without a commit (a close, an error in
    # commit): nothing queued in it may survive into the session's next one.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _within(queued_in: SessionTransaction | None, rolled_back: SessionTransaction) -> bool:
    tx = queued_in
    while tx is not None:
        if tx is rolled_back:
            return True
        tx = tx.parent
    return False
