"""Catalog read cache with generation-based invalidation.

Every entry lives under the current generation number. A write bumps the
generation after it commits, so any read that starts after the write has
returned looks under the new generation and goes to the database; a slow
reader that raced the write can only refill the old generation, which nobody
reads any more.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any

from questline.config import get_settings
from questline.infra.kv import KeyValueError, get_kv

log = logging.getLogger(__name__)

GENERATION_KEY = "ql:catalog:generation"
_GENERATION_TTL = 30 * 24 * 3600


def _generation() -> str:
    kv = get_kv()
    gen = kv.get(GENERATION_KEY)
    if gen is None:
        # First use, or the cache server lost its data: start a fresh generation,
        # numbered from the clock so it never repeats one that processes remember.
        kv.add(GENERATION_KEY, str(time.time_ns()), _GENERATION_TTL * 1000)
        gen = str(kv.incr(GENERATION_KEY, _GENERATION_TTL))
    return gen


# Decoded entries kept in this process, under their generation: a hit costs one
# round trip (reading the generation, which keeps invalidation immediate) and no
# decoding. They live a few seconds at most, so a generation bump that failed
# cannot keep them longer than the shared entries' TTL would.
_LOCAL_SECONDS = 5.0
_local: dict[str, tuple[Any, float]] = {}


def cached(name: str, load: Callable[[], Any]) -> Any:
    """The value under `name`, loaded from the database on a miss."""
    try:
        key = f"ql:catalog:{_generation()}:{name}"
        local = _local.get(key)
        if local is not None and local[1] > time.monotonic():
            return local[0]
        raw = get_kv().get(key)
        if raw is not None:
            value = json.loads(raw)
            _remember(key, value)
            return value
    except KeyValueError:
        log.warning("catalog cache unavailable; reading the database")
        return load()
    value = load()
    try:
        get_kv().set(key, json.dumps(value, default=str), get_settings().catalog_cache_ttl_seconds)
    except KeyValueError:
        log.warning("catalog cache unavailable; not storing %s", name)
    return value


def _remember(key: str, value: Any) -> None:
    if len(_local) > 1000:  # older generations' entries are never read again
        _local.clear()
    _local[key] = (value, time.monotonic() + _LOCAL_SECONDS)


def invalidate() -> None:
    """Start a new generation. Call after the catalog write has committed."""
    try:
        # Through _generation: when the cache server lost the key, a bare INCR would
        # restart it at 1, a number other processes may still hold entries under.
        _generation()
        get_kv().incr(GENERATION_KEY, _GENERATION_TTL)
    except KeyValueError:
        # Entries expire after catalog_cache_ttl_seconds at the latest.
        log.error("catalog cache unavailable; stale entries live until their TTL")
