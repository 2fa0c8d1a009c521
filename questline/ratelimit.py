"""Failed-login limits per user name and per client, checked before any hashing."""

from __future__ import annotations

import logging

from questline.config import get_settings
from questline.errors import TooManyAttempts
from questline.infra.kv import KeyValueError, get_kv

log = logging.getLogger(__name__)


def _keys(user_name: str, client: str) -> list[tuple[str, int]]:
    s = get_settings()
    return [
        (f"ql:login-fail:name:{user_name.casefold()}", s.login_max_failures_per_name),
        (f"ql:login-fail:client:{client}", s.login_max_failures_per_client),
    ]


def check_login_allowed(user_name: str, client: str) -> None:
    """Raise TooManyAttempts (with Retry-After) when either limit is spent."""
    kv = get_kv()
    try:
        for key, limit in _keys(user_name, client):
            count = kv.get(key)
            if count is not None and int(count) >= limit:
                raise TooManyAttempts(retry_after=max(1, kv.ttl(key)))
    except KeyValueError:
        # Fail open: a cache outage must not lock every player out.
        log.warning("login rate limiter unavailable; allowing attempt")


def record_login_failure(user_name: str, client: str) -> None:
    kv = get_kv()
    window = get_settings().login_failure_window_seconds
    try:
        for key, _limit in _keys(user_name, client):
            kv.incr(key, window)
    except KeyValueError:
        log.warning("login rate limiter unavailable; failure not counted")


def clear_login_failures(user_name: str) -> None:
    try:
        get_kv().delete(_keys(user_name, "")[0][0])
    except KeyValueError:
        log.warning("login rate limiter unavailable; failures not cleared")
