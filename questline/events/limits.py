"""Events per user per minute (QUESTLINE_EVENTS_PER_USER_PER_MINUTE).

A batch is counted before it is stored: each user's share of it is added to that user's
counter in one atomic step of the key-value store, and only if no user would go over the
limit; otherwise nothing is counted and the batch is refused (429). A batch refused later
(a bad user id, a failed commit) gives its count back. Each counter's window is 60 s from
its first count. The limiter fails open: when Redis does not answer, events are still
taken (losing them would be worse than a burst).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from questline.config import get_settings
from questline.errors import DomainError
from questline.infra.kv import KeyValueError, get_kv

log = logging.getLogger(__name__)

WINDOW_SECONDS = 60


class TooManyEvents(DomainError):
    status_code = 429

    def __init__(self, *, user_id: int, limit: int, retry_after: int) -> None:
        super().__init__(
            f"too many events for user {user_id}: at most {limit} per minute; "
            f"retry in {retry_after} s"
        )
        self.headers = {"Retry-After": str(retry_after)}
        self.user_id = user_id


def _key(user_id: int) -> str:
    return f"ql:events-per-minute:{user_id}"


def take(per_user: Mapping[int, int]) -> dict[str, int]:
    """Count `per_user` ({user_id: events}) against the limit, all or nothing; the amounts
    counted (to give back if the batch is refused later). Raises TooManyEvents."""
    limit = get_settings().events_per_user_per_minute
    amounts = {_key(user_id): n for user_id, n in sorted(per_user.items())}
    try:
        refused = get_kv().add_within(amounts, limit=limit, ttl=WINDOW_SECONDS)
    except KeyValueError:
        log.warning("event rate limiter unavailable; batch taken uncounted")
        return {}
    if refused is not None:
        key, retry_after = refused
        user_id = next(u for u in per_user if _key(u) == key)
        raise TooManyEvents(user_id=user_id, limit=limit, retry_after=retry_after)
    return amounts


def give_back(amounts: Mapping[str, int]) -> None:
    """Undo `take` for a batch that was not stored."""
    if not amounts:
        return
    try:
        get_kv().subtract(amounts)
    except KeyValueError:
        log.warning("event rate limiter unavailable; a refused batch stays counted")
