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
from collections.abc import Callable
from typing import Any

from questline.config import get_settings
from questline.kv import KeyValueError, get_kv

log = logging.getLogger(__name__)

GENERATION_KEY = "ql:catalog:generation"
_GENERATION_TTL = 30 * 24 * 3600


def _generation() -> str:
    kv = get_kv()
    gen = kv.get(GENERATION_KEY)
    if gen is None:
        # First use, or the cache server lost its data: start a fresh generation.
        gen = str(kv.incr(GENERATION_KEY, _GENERATION_TTL))
    return gen


def cached(name: str, load: Callable[[], Any]) -> Any:
    """The value under `name`, loaded from the database on a miss."""
    try:
        key = f"ql:catalog:{_generation()}:{name}"
        raw = get_kv().get(key)
        if raw is not None:
            return json.loads(raw)
    except KeyValueError:
        log.warning("catalog cache unavailable; reading the database")
        return load()
    value = load()
    try:
        get_kv().set(key, json.dumps(value, default=str), get_settings().catalog_cache_ttl_seconds)
    except KeyValueError:
        log.warning("catalog cache unavailable; not storing %s", name)
    return value


def invalidate() -> None:
    """Start a new generation. Call after the catalog write has committed."""
    try:
        get_kv().incr(GENERATION_KEY, _GENERATION_TTL)
    except KeyValueError:
        # Entries expire after catalog_cache_ttl_seconds at the latest.
        log.error("catalog cache unavailable; stale entries live until their TTL")
