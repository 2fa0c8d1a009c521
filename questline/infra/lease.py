"""A value read from the database and trusted for a short time without reading it again.

A Lease holds what its `read` function last returned and when that read *started*:
whatever was committed before that moment is in the value. Readers take the value
while it is younger than `seconds` (fresh(), no I/O), and otherwise call renew(),
which reads again (one thread at a time; the others wait for it and take its value).
Once half the time has passed, the next reader also wakes a background thread that
renews the lease, so under steady load no request waits for the database.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class Lease(Generic[T]):
    def __init__(self, name: str, seconds: float, read: Callable[[], T]) -> None:
        self.name = name
        self.seconds = seconds
        self._read = read
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._value: T | None = None
        self._since = -float("inf")  # time.monotonic() when the read that found _value started
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._renewer: threading.Thread | None = None

    def fresh(self) -> T | None:
        """The value while it may be trusted, else None; never does I/O."""
        age = time.monotonic() - self._since
        if age >= self.seconds:
            return None
        if age >= self.seconds / 2:
            self._renew_in_background()
        return self._value

    def renew(self, read: Callable[[], T] | None = None) -> T:
        """A value read from now on (or by a read another thread started while this one
        waited for it). `read` reads in place of the lease's own function, e.g. through
        the caller's session (on SQLite a second connection of the same thread would
        wait for the first one's write lock forever)."""
        waited_from = time.monotonic()
        with self._lock:
            if self._since >= waited_from and self._value is not None:
                return self._value
            started = time.monotonic()
            value = (read or self._read)()
            self._value, self._since = value, started
            return value

    def forget(self) -> None:
        """Trust nothing read so far: the next reader reads again."""
        with self._lock:
            self._value, self._since = None, -float("inf")

    def _renew_in_background(self) -> None:
        if self._renewer is None:
            with self._lock:
                if self._renewer is None:
                    self._renewer = threading.Thread(
                        target=self._run, name=f"questline-{self.name}-lease", daemon=True
                    )
                    self._renewer.start()
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.renew()
            except Exception as exc:  # readers renew themselves once the lease runs out
                log.warning("could not renew the %s lease (%s)", self.name, exc)
                time.sleep(self.seconds)
