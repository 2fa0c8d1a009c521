"""The key-value store behind rate limits and the catalog cache: Redis, or process memory.

Both are best-effort: when Redis does not answer, callers carry on without it
(logins still work, catalog reads go to the database).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Protocol

import redis

from questline.config import get_settings

log = logging.getLogger(__name__)

KeyValueError = (redis.RedisError, OSError)


class KeyValue(Protocol):
    def get(self, key: str) -> str | None: ...
    def set(self, key: str, value: str, ttl: int) -> None: ...
    def incr(self, key: str, ttl: int) -> int:
        """Increment a counter; the first increment starts its time to live."""
        ...

    def ttl(self, key: str) -> int: ...
    def add(self, key: str, value: str, ttl_ms: int) -> bool:
        """Set the key only if it is absent; True if this call set it."""
        ...

    def delete(self, key: str) -> None: ...
    def ping(self) -> None: ...
    def add_within(
        self, amounts: Mapping[str, int], *, limit: int, ttl: int
    ) -> tuple[str, int] | None:
        """Add each amount to its counter unless one would pass `limit`, as one atomic
        step: None when added, else (that key, seconds until its window ends). The first
        addition to a counter starts its window of `ttl` seconds."""
        ...

    def subtract(self, amounts: Mapping[str, int]) -> None:
        """Take amounts back from the counters that still exist."""
        ...


# Check every counter, then add to every counter: atomic in Redis, so parallel batches
# cannot all pass the check before any of them is counted.
_ADD_WITHIN = """
local limit, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') + tonumber(ARGV[i + 2]) > limit then
    local left = redis.call('TTL', key)
    if left < 1 then left = ttl end
    return {key, left}
  end
end
for i, key in ipairs(KEYS) do
  if redis.call('INCRBY', key, ARGV[i + 2]) == tonumber(ARGV[i + 2]) then
    redis.call('EXPIRE', key, ttl)
  end
end
return false
"""

_SUBTRACT = """
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then redis.call('DECRBY', key, ARGV[i]) end
end
return false
"""


class RedisKeyValue:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            health_check_interval=10,
        )

    def get(self, key: str) -> str | None:
        value = self.client.get(key)
        return None if value is None else str(value)

    def set(self, key: str, value: str, ttl: int) -> None:
        self.client.set(key, value, ex=ttl)

    def incr(self, key: str, ttl: int) -> int:
        pipe = self.client.pipeline()
        pipe.incr(key)
        pipe.expire(key, ttl, nx=True)
        count, _ = pipe.execute()
        return int(count)

    def ttl(self, key: str) -> int:
        return int(self.client.ttl(key))

    def add(self, key: str, value: str, ttl_ms: int) -> bool:
        return bool(self.client.set(key, value, px=ttl_ms, nx=True))

    def delete(self, key: str) -> None:
        self.client.delete(key)

    def ping(self) -> None:
        self.client.ping()

    def add_within(
        self, amounts: Mapping[str, int], *, limit: int, ttl: int
    ) -> tuple[str, int] | None:
        keys = list(amounts)
        refused = self.client.eval(
            _ADD_WITHIN, len(keys), *keys, limit, ttl, *(amounts[k] for k in keys)
        )
        return None if not refused else (str(refused[0]), int(refused[1]))

    def subtract(self, amounts: Mapping[str, int]) -> None:
        keys = list(amounts)
        self.client.eval(_SUBTRACT, len(keys), *keys, *(amounts[k] for k in keys))


class MemoryKeyValue:
    """For the embedded mode: one process, no server."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> tuple[str, float] | None:
        item = self._data.get(key)
        if item is not None and item[1] <= time.monotonic():
            del self._data[key]
            return None
        return item

    def get(self, key: str) -> str | None:
        with self._lock:
            item = self._live(key)
            return None if item is None else item[0]

    def set(self, key: str, value: str, ttl: int) -> None:
        with self._lock:
            self._data[key] = (value, time.monotonic() + ttl)

    def incr(self, key: str, ttl: int) -> int:
        with self._lock:
            item = self._live(key)
            if item is None:
                self._data[key] = ("1", time.monotonic() + ttl)
                return 1
            count = int(item[0]) + 1
            self._data[key] = (str(count), item[1])
            return count

    def ttl(self, key: str) -> int:
        with self._lock:
            item = self._live(key)
            return -2 if item is None else max(1, int(item[1] - time.monotonic()))

    def add(self, key: str, value: str, ttl_ms: int) -> bool:
        with self._lock:
            if self._live(key) is not None:
                return False
            self._data[key] = (value, time.monotonic() + ttl_ms / 1000)
            return True

    def delete(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def ping(self) -> None:
        return None

    def add_within(
        self, amounts: Mapping[str, int], *, limit: int, ttl: int
    ) -> tuple[str, int] | None:
        with self._lock:
            for key, amount in amounts.items():
                item = self._live(key)
                if (int(item[0]) if item else 0) + amount > limit:
                    left = max(1, int(item[1] - time.monotonic())) if item else ttl
                    return key, left
            for key, amount in amounts.items():
                item = self._live(key)
                if item is None:
                    self._data[key] = (str(amount), time.monotonic() + ttl)
                else:
                    self._data[key] = (str(int(item[0]) + amount), item[1])
            return None

    def subtract(self, amounts: Mapping[str, int]) -> None:
        with self._lock:
            for key, amount in amounts.items():
                item = self._live(key)
                if item is not None:
                    self._data[key] = (str(int(item[0]) - amount), item[1])


@lru_cache
def get_kv() -> KeyValue:
    url = get_settings().redis_url
    return MemoryKeyValue() if url is None else RedisKeyValue(url)
