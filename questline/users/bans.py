"""The banned users, known in each process without reading the user row per request.

API.md lets a ban take effect within 1 second on every service. Each process keeps
the banned user ids in memory, from two sources:

- push: a ban queues UserBanned on its session; after the commit the one after-commit
  hook hands it to this module, which adds the id here at once and publishes it on
  Redis pub/sub; every API process listens (one thread) and adds it too. Fast, but a
  process may miss a message (Redis down, the process just started).
- the database, which carries the bound: every ban bumps the ban version in its own
  transaction (users.repository.ban). The set here is trusted only for LEASE_SECONDS
  after the start of the read that confirmed it; a request that finds it older reads
  the version again (and the banned ids if the version moved) before it is answered.
  A request that starts more than 1 s after a ban was answered is therefore checked
  against a read that started after the ban committed, whatever Redis did.

The paths that write for the user (login, refresh, claims, /auth/me) keep checking the
user row inside their own transaction, so a ban applies to them at once.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

import redis

from models.users import UserStatus
from questline.config import get_settings
from questline.errors import Banned, Unauthorized
from questline.infra import after_commit, db
from questline.infra.lease import Lease
from questline.users import repository

log = logging.getLogger(__name__)

CHANNEL = "ql:bans"
# How long a confirmed set is trusted: a ban is seen at most this long after it
# committed, plus the request's own time, so well under the contract's 1 second.
LEASE_SECONDS = 0.5
# Users remembered as existing, per process; past this the memory starts again.
_KNOWN_LIMIT = 100_000


@dataclass(frozen=True)
class UserBanned:
    """A ban committed: `user_id` is refused from now on."""

    user_id: int


class BanList:
    """The banned ids of this process, the users it has seen, and the lease that says
    how fresh the banned ids are."""

    def __init__(self) -> None:
        self._reset()
        self._lease = Lease("bans", LEASE_SECONDS, self._read)

    def _reset(self) -> None:
        # Also run in a forked child, which has neither the parent's thread nor its lock.
        self._ids: frozenset[int] = frozenset()
        self._known: set[int] = set()  # users seen in the database
        self._version = -1
        self._lock = threading.Lock()
        self._listening = False

    def fresh(self) -> bool:
        """True while the set may be trusted without reading the database."""
        return self._lease.fresh() is not None

    def knows(self, user_id: int) -> bool:
        """True when this process has seen the user in the database (users are never
        deleted, so once is enough)."""
        return user_id in self._known

    def refuse_if_banned(self, user_id: int) -> None:
        """Banned if the user is in the set. Call confirm() first unless fresh() and
        knows(user_id)."""
        if user_id in self._ids:
            raise Banned()

    def confirm(self, user_id: int) -> None:
        """renew() if the lease ran out, and look the user up once: Unauthorized for a
        token of a user who does not exist."""
        if not self.fresh():
            self.renew()
        if user_id in self._known:
            return
        with db.session_factory()() as session:
            user = repository.get_by_id(session, user_id)
            status = None if user is None else user.status
            session.rollback()
        if status is None:
            raise Unauthorized("invalid token")
        if status == UserStatus.BANNED:
            self.add(user_id)
        with self._lock:
            if len(self._known) >= _KNOWN_LIMIT:
                self._known = set()
            self._known.add(user_id)

    def renew(self) -> None:
        """Confirm the set from the database (the version, and the ids if it moved)."""
        self._lease.renew()

    def _read(self) -> int:
        with db.session_factory()() as session:
            version = repository.ban_version(session)
            if version != self._version:
                # Read after the version: it holds at least every ban up to it.
                banned = repository.banned_user_ids(session)
                with self._lock:
                    self._ids = self._ids | banned
                    self._version = version
            session.rollback()
        return version

    def add(self, user_id: int) -> None:
        """A ban heard of (committed here, or published by another process)."""
        with self._lock:
            self._ids = self._ids | {user_id}

    def forget(self) -> None:
        """Drop what this process knows: the next checks read every banned id and each
        user again (for tests, which empty the users table behind the service's back)."""
        self._lease.forget()
        with self._lock:
            self._ids = frozenset()
            self._known = set()
            self._version = -1

    # -- pub/sub --

    def listen(self) -> None:
        """Start the thread that adds the bans other processes publish (once per
        process; nothing to listen to in the embedded mode)."""
        url = get_settings().redis_url
        with self._lock:
            if self._listening or url is None:
                return
            self._listening = True
        listener = threading.Thread(
            target=self._listen, args=(url,), name="questline-bans", daemon=True
        )
        listener.start()

    def _listen(self, url: str) -> None:
        backoff = 0.1
        while True:
            try:
                client = redis.Redis.from_url(
                    url, socket_connect_timeout=1, socket_timeout=5, health_check_interval=2
                )
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(CHANNEL)
                backoff = 0.1
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self.add(int(message["data"]))
            except Exception as exc:  # Redis away: the lease still bounds the delay
                log.debug("ban listener: %s: %s; retrying", type(exc).__name__, exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)


def _announce(message: UserBanned) -> None:
    """After a ban's commit: known here at once, and published for the other processes
    from a short-lived thread, so the answer never waits for Redis."""
    ban_list.add(message.user_id)
    url = get_settings().redis_url
    if url is not None:
        threading.Thread(target=_publish, args=(url, message.user_id), daemon=True).start()


def _publish(url: str, user_id: int) -> None:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        client.publish(CHANNEL, str(user_id))
        client.close()
    except redis.RedisError as exc:  # the lease bounds the delay
        log.warning("could not publish the ban of user %d (%s)", user_id, exc)


ban_list = BanList()
os.register_at_fork(after_in_child=ban_list._reset)
after_commit.register(UserBanned, _announce)
