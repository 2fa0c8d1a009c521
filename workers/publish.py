"""Publishing the message that wakes a worker for a stored sign-in."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def publish_sign_in(event_id: int, user_id: int | None = None) -> bool:
    """Best-effort: the sign-in is already durable, and the sweeper applies it if
    this message is lost or never sent (broker down)."""
    from workers.tasks import process_sign_in

    try:
        process_sign_in.apply_async((event_id,), {"user_id": user_id}, retry=False)
        return True
    except Exception:
        log.warning("could not publish sign-in %s; the sweeper will apply it", event_id)
        return False
