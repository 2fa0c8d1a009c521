"""The key-value store behind rate limits and the catalog cache: Redis, or process memory.

Both are best-effort: when Redis does not answer, callers carry on without it
(logins still work, catalog reads go to the database). A frozen Redis costs one
short socket timeout, not one per request: the first timeout opens a circuit
breaker shared by every Redis client of the process (this store and the broker
publisher), and calls fail at once until a background probe gets an answer.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

import redis
from redis.connection import AbstractConnection

from questline.config import get_settings

log = logging.getLogger(__name__)

KeyValueError = (redis.RedisError, OSError)

# Errors that mean "the server did not answer", as opposed to an error it answered.
_UNREACHABLE = (redis.ConnectionError, redis.TimeoutError, OSError)


class CircuitBreaker:
    """Fails calls at once for a while after the server stopped answering in time.

    Closed: calls go through. The first failure opens it. While it is open, no
    caller waits on the server: every `open_seconds` (default:
    QUESTLINE_REDIS_BREAKER_OPEN_SECONDS) a background thread sends `probe`, and
    an answer closes the breaker. Without a probe function, the first caller
    after `open_seconds` is let through as the probe instead.
    """

    def __init__(
        self,
        open_seconds: float | None = None,
        probe: Callable[[], object] | None = None,
        name: str = "Redis",
    ) -> None:
        self._open_seconds = open_seconds
        self.probe = probe
        self.name = name  # of the server, for the log
        self._reset()
        _breakers.add(self)

    def _reset(self) -> None:
        # Also run in a forked child: the parent's lock and prober do not exist there.
        self._lock = threading.Lock()
        self._failing = False
        self._open_until = 0.0
        self._probe_thread: int | None = None
        self._prober: threading.Thread | None = None

    @property
    def open_seconds(self) -> float:
        if self._open_seconds is None:
            return get_settings().redis_breaker_open_seconds
        return self._open_seconds

    @property
    def is_open(self) -> bool:
        return self._failing

    def allow(self) -> bool:
        """True if this thread may send to the server now."""
        if not self._failing:  # the fast path: no lock while all is well
            return True
        me = threading.get_ident()
        with self._lock:
            if not self._failing or self._probe_thread == me:
                return True
            if self.probe is not None or time.monotonic() < self._open_until:
                return False
            self._probe_thread = me  # no prober: this caller probes
            self._open_until = time.monotonic() + self.open_seconds
            return True

    def succeeded(self) -> None:
        """The server answered: close the breaker."""
        if self._failing:
            with self._lock:
                if self._failing:
                    log.info("%s answers again; circuit breaker closed", self.name)
                self._failing = False
                self._probe_thread = None

    def failed(self) -> None:
        """The server did not answer (in time): open the breaker."""
        with self._lock:
            if not self._failing:
                log.warning(
                    "%s did not answer in time; failing fast, probing every %.1f s",
                    self.name,
                    self.open_seconds,
                )
            self._failing = True
            self._open_until = time.monotonic() + self.open_seconds
            self._probe_thread = None
            if self.probe is not None and (self._prober is None or not self._prober.is_alive()):
                self._prober = threading.Thread(
                    target=self._probe_until_closed,
                    name=f"questline-{self.name.split()[-1].lower()}-probe",
                    daemon=True,
                )
                self._prober.start()

    def _probe_until_closed(self) -> None:
        probe = self.probe
        assert probe is not None
        while True:
            time.sleep(self.open_seconds)
            with self._lock:
                if not self._failing:
                    return
                self._probe_thread = threading.get_ident()
            try:
                probe()
            except Exception:
                self.failed()  # still away (a probe refused by itself is no news either)
            else:
                self.succeeded()


_breakers: weakref.WeakSet[CircuitBreaker] = weakref.WeakSet()


def _reset_breakers_after_fork() -> None:
    for breaker in list(_breakers):
        breaker._reset()


os.register_at_fork(after_in_child=_reset_breakers_after_fork)


class BreakerOpen(redis.ConnectionError):
    """Raised instead of talking to a Redis that recently failed to answer."""


def guarded(base: type[AbstractConnection], breaker: CircuitBreaker) -> type[AbstractConnection]:
    """`base` with every connect, send and read going through `breaker`, so that
    pipelines and every command of the client are covered alike."""

    def call(method: Any, self: Any, *args: Any, **kwargs: Any) -> Any:
        if not breaker.allow():
            raise BreakerOpen("Redis recently did not answer; not trying for a moment")
        try:
            return method(self, *args, **kwargs)
        except BreakerOpen:
            raise  # a nested step refused by the breaker is not a new failure
        except _UNREACHABLE:
            breaker.failed()
            raise

    def connect(self: Any) -> None:
        call(base.connect, self)

    def send_packed_command(self: Any, *args: Any, **kwargs: Any) -> None:
        call(base.send_packed_command, self, *args, **kwargs)

    def read_response(self: Any, *args: Any, **kwargs: Any) -> Any:
        # Only an answer proves the server is back: a frozen server still accepts
        # connections and takes our bytes.
        try:
            response = base.read_response(self, *args, **kwargs)
        except _UNREACHABLE:
            breaker.failed()
            raise
        breaker.succeeded()
        return response

    methods = {
        "connect": connect,
        "send_packed_command": send_packed_command,
        "read_response": read_response,
    }
    return type(f"Guarded{base.__name__}", (base,), methods)


@dataclass(frozen=True)
class Counted:
    """A counter to count one on, within `limit` per window of `window` seconds."""

    key: str
    limit: int
    window: int


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
    def publish(self, channel: str, message: str) -> int:
        """Publish on a pub/sub channel; how many subscribers got it."""
        ...

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

    def begin_attempt(
        self, limits: Mapping[str, int], attempt: str, *, window: int, in_flight: int
    ) -> int:
        """Start `attempt` against every key's limit of failures, as one atomic step.

        0: it may go ahead, and counts as in flight on every key until settled (or for
        `in_flight` seconds at most). -1: failures plus attempts in flight reach a
        limit, so those attempts could still spend it: ask again shortly. Otherwise a
        limit is spent: the seconds until its window of `window` seconds ends.
        """
        ...

    def settle_attempt(
        self,
        keys: Sequence[str],
        attempt: str,
        *,
        failed: bool,
        window: int,
        clear: str | None,
        count: Counted | None = None,
    ) -> int:
        """End an attempt begun on `keys`: a failure counts on each key (the first one
        starts its window), and `clear` (one of the keys) loses its failures. In the
        same step, `count` (if given) adds one to its counter: 0 when that stays within
        its limit, else the seconds until its window ends."""
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

# Attempts in flight live in a sorted set beside each failure counter, scored by when
# they stop counting (so that one lost by a crashed process frees its place).
_BEGIN_ATTEMPT = """
local now = tonumber(redis.call('TIME')[1])
local busy = false
for i, key in ipairs(KEYS) do
  local failures = tonumber(redis.call('GET', key) or '0')
  local limit = tonumber(ARGV[i + 3])
  if failures >= limit then
    return math.max(redis.call('TTL', key), 1)
  end
  local in_flight = key .. ':in-flight'
  redis.call('ZREMRANGEBYSCORE', in_flight, '-inf', now)
  if failures + redis.call('ZCARD', in_flight) >= limit then busy = true end
end
if busy then return -1 end
for _, key in ipairs(KEYS) do
  local in_flight = key .. ':in-flight'
  redis.call('ZADD', in_flight, now + tonumber(ARGV[3]), ARGV[2])
  redis.call('EXPIRE', in_flight, ARGV[3])
end
return 0
"""

# With ARGV[5] (a limit) and ARGV[6] (a window), the last key is a counter to count
# one on, not an attempt's key: its verdict is the answer.
_SETTLE_ATTEMPT = """
local attempts = #KEYS
if ARGV[5] then attempts = attempts - 1 end
for i = 1, attempts do
  local key = KEYS[i]
  redis.call('ZREM', key .. ':in-flight', ARGV[1])
  if ARGV[3] == '1' and redis.call('INCR', key) == 1 then
    redis.call('EXPIRE', key, ARGV[2])
  end
end
if ARGV[4] ~= '0' then redis.call('DEL', KEYS[tonumber(ARGV[4])]) end
if not ARGV[5] then return 0 end
local counter = KEYS[#KEYS]
local n = redis.call('INCR', counter)
if n == 1 then redis.call('EXPIRE', counter, ARGV[6]) end
if n <= tonumber(ARGV[5]) then return 0 end
return math.max(redis.call('TTL', counter), 1)
"""


class RedisKeyValue:
    def __init__(self, url: str) -> None:
        pool = redis.ConnectionPool.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
            health_check_interval=10,
        )
        # The store's breaker, shared with the broker publisher (shared_breaker()).
        self.breaker = CircuitBreaker()
        pool.connection_class = guarded(pool.connection_class, self.breaker)
        self.client = redis.Redis(connection_pool=pool)
        self.breaker.probe = self.client.ping
        self._add_within = self.client.register_script(_ADD_WITHIN)
        self._subtract = self.client.register_script(_SUBTRACT)
        self._begin_attempt = self.client.register_script(_BEGIN_ATTEMPT)
        self._settle_attempt = self.client.register_script(_SETTLE_ATTEMPT)

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

    def publish(self, channel: str, message: str) -> int:
        return int(self.client.publish(channel, message))

    def add_within(
        self, amounts: Mapping[str, int], *, limit: int, ttl: int
    ) -> tuple[str, int] | None:
        keys = list(amounts)
        refused = self._add_within(keys=keys, args=[limit, ttl, *(amounts[k] for k in keys)])
        return None if not refused else (str(refused[0]), int(refused[1]))

    def subtract(self, amounts: Mapping[str, int]) -> None:
        keys = list(amounts)
        self._subtract(keys=keys, args=[amounts[k] for k in keys])

    def begin_attempt(
        self, limits: Mapping[str, int], attempt: str, *, window: int, in_flight: int
    ) -> int:
        args: list[str | int] = [window, attempt, in_flight, *limits.values()]
        return int(self._begin_attempt(keys=list(limits), args=args))

    def settle_attempt(
        self,
        keys: Sequence[str],
        attempt: str,
        *,
        failed: bool,
        window: int,
        clear: str | None,
        count: Counted | None = None,
    ) -> int:
        # The key to clear goes by its place among KEYS (a script names every key it touches).
        cleared = list(keys).index(clear) + 1 if clear is not None else 0
        args: list[str | int] = [attempt, window, "1" if failed else "0", cleared]
        all_keys = list(keys)
        if count is not None:
            all_keys.append(count.key)
            args += [count.limit, count.window]
        return int(self._settle_attempt(keys=all_keys, args=args))


class MemoryKeyValue:
    """For the embedded mode: one process, no server."""

    def __init__(self) -> None:
        self._data: dict[str, tuple[str, float]] = {}
        self._in_flight: dict[str, dict[str, float]] = {}  # key -> {attempt: until}
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

    def publish(self, channel: str, message: str) -> int:
        return 0  # one process, no subscribers: the embedded mode delivers in-process

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

    def begin_attempt(
        self, limits: Mapping[str, int], attempt: str, *, window: int, in_flight: int
    ) -> int:
        with self._lock:
            now = time.monotonic()
            busy = False
            for key, limit in limits.items():
                item = self._live(key)
                failures = int(item[0]) if item else 0
                if failures >= limit:
                    return max(1, int(item[1] - now)) if item else 1
                flying = self._in_flight.setdefault(key, {})
                for other, until in list(flying.items()):
                    if until <= now:
                        del flying[other]
                busy = busy or failures + len(flying) >= limit
            if busy:
                return -1
            for key in limits:
                self._in_flight[key][attempt] = now + in_flight
            return 0

    def settle_attempt(
        self,
        keys: Sequence[str],
        attempt: str,
        *,
        failed: bool,
        window: int,
        clear: str | None,
        count: Counted | None = None,
    ) -> int:
        self._settle(keys, attempt, failed=failed, window=window, clear=clear)
        if count is None:
            return 0
        if self.incr(count.key, count.window) <= count.limit:
            return 0
        return self.ttl(count.key)

    def _settle(
        self, keys: Sequence[str], attempt: str, *, failed: bool, window: int, clear: str | None
    ) -> None:
        with self._lock:
            for key in keys:
                flying = self._in_flight.get(key, {})
                flying.pop(attempt, None)
                if not flying:
                    self._in_flight.pop(key, None)
                if failed:
                    item = self._live(key)
                    count = int(item[0]) + 1 if item else 1
                    self._data[key] = (str(count), item[1] if item else time.monotonic() + window)
            if clear is not None:
                self._data.pop(clear, None)


@lru_cache
def get_kv() -> KeyValue:
    url = get_settings().redis_url
    return MemoryKeyValue() if url is None else RedisKeyValue(url)


_embedded_breaker = CircuitBreaker()


def shared_breaker() -> CircuitBreaker:
    """The breaker every Redis client of this process shares: the store's; in the
    embedded mode (no Redis) one for the broker publisher alone."""
    kv = get_kv()
    return kv.breaker if isinstance(kv, RedisKeyValue) else _embedded_breaker
