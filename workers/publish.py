"""Publishing the messages that wake workers for stored sign-ins.

By default (with Redis) a sign-in does not get a message of its own: the API sends
one `questline.drain_outbox` wake-up if none is pending, and the worker that takes
it applies every pending sign-in in batches. A Redis flag marks "a wake-up is
queued and no drain has cleared the flag since"; the drain lingers
drain_linger_seconds (sign-ins meanwhile join it), then clears the flag before it
looks at the outbox, so a sign-in committed before the flag was seen is always found
either by that drain or by the one its own wake-up starts. All of this is best-effort: the
sign-in is already durable, and the sweeper applies it if a message is lost.
"""

from __future__ import annotations

import logging
import time

from questline.config import get_settings
from questline.infra.kv import KeyValueError, get_kv

log = logging.getLogger(__name__)

WAKEUP_KEY = "ql:outbox:wakeup-pending"


def batching() -> bool:
    """True when sign-ins wake a batch drain rather than sending one message each."""
    settings = get_settings()
    return settings.sign_in_dispatch == "batch" and not settings.embedded


# After a failed publish, sign-ins skip publishing for this long instead of each
# waiting out the broker's connect timeout: the answer stays fast during an outage
# and the sweeper applies what was not announced.
BROKER_BACKOFF_SECONDS = 1.0
_broker_quiet_until = 0.0


def publish_sign_in(event_id: int, user_id: int | None = None) -> bool:
    """Make sure a worker will apply this stored sign-in soon; False if the broker is away."""
    global _broker_quiet_until
    if time.monotonic() < _broker_quiet_until:
        return False
    sent = wake_drainer() if batching() else publish_process_sign_in(event_id, user_id)
    if not sent:
        _broker_quiet_until = time.monotonic() + BROKER_BACKOFF_SECONDS
    return sent


def publish_process_sign_in(event_id: int, user_id: int | None = None) -> bool:
    """One message for one sign-in: replays, and the per-event dispatch mode."""
    from workers.tasks import process_sign_in

    try:
        process_sign_in.apply_async((event_id,), {"user_id": user_id}, retry=False)
        return True
    except Exception:
        log.warning("could not publish sign-in %s; the sweeper will apply it", event_id)
        return False


def wake_drainer() -> bool:
    """Queue a drain_outbox wake-up unless one is queued whose drain has not cleared the flag."""
    from workers.tasks import drain_outbox

    ttl_ms = int(get_settings().wakeup_ttl_seconds * 1000)
    try:
        if not get_kv().add(WAKEUP_KEY, "1", ttl_ms):
            return True  # a queued drain will find this sign-in
    except KeyValueError:
        pass  # no flag: wake anyway, a spare wake-up costs one empty query
    try:
        drain_outbox.apply_async(retry=False)
        return True
    except Exception:
        log.warning("could not publish a drain wake-up; the sweeper will apply the sign-ins")
        # Let the next sign-in try again instead of waiting for the flag to expire.
        clear_wakeup()
        return False


def clear_wakeup() -> None:
    """Called by a drain before it looks at the outbox: later sign-ins wake a new one."""
    try:
        get_kv().delete(WAKEUP_KEY)
    except KeyValueError:
        pass  # the flag expires after wakeup_ttl_seconds anyway
