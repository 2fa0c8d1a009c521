"""Limits on the auth service over real HTTP: failed logins (atomic, per name and client),
sign-ups per client, sign-ins per user, the cap on concurrent password hashing, and
which client address the limits see."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from models import User
from questline import security
from questline.config import Settings, get_settings
from questline.infra import db
from tests import factories as f
from tests import support


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings the in-process server reads; a test changes them with
    monkeypatch.setattr(settings, ...), undone after it."""
    return get_settings()


def login(
    client: httpx.Client, name: str, password: str = f.PASSWORD, source: str | None = None
) -> httpx.Response:
    """POST /auth/login, from client `source` (an X-Forwarded-For value the test server,
    like a deployment behind the bundled proxy, takes from its loopback peer)."""
    headers = {"X-Forwarded-For": source} if source else {}
    return client.post(
        "/auth/login", json={"user_name": name, "password": password}, headers=headers
    )


def stored_user(name: str, **columns: Any) -> int:
    with db.transaction() as session:
        return f.add_user(session, name, **columns).user_id


def parallel(
    n: int, call: Callable[[httpx.Client, int], httpx.Response], client: httpx.Client
) -> list[httpx.Response]:
    """n calls at once, each on its own connection, released together."""
    barrier = threading.Barrier(n)

    def run(i: int) -> httpx.Response:
        with httpx.Client(base_url=client.base_url, timeout=120) as c:
            barrier.wait()
            return call(c, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


# --- failed logins ------------------------------------------------------------------


def test_40_parallel_wrong_guesses_get_at_most_the_limit_checked(
    client: httpx.Client, settings: Settings
) -> None:
    stored_user("alice")
    limit = settings.login_max_failures_per_name_and_client

    def guess(c: httpx.Client, _i: int) -> httpx.Response:
        return login(c, "alice", "wrong-password")

    answers = parallel(40, guess, client)
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {401, 429}, statuses
    assert statuses[401] <= limit, statuses  # each one counted before its hash
    assert statuses[429] >= 40 - limit, statuses
    assert all(int(r.headers["Retry-After"]) >= 1 for r in answers if r.status_code == 429)
    # The 41st, with the right password, waits too.
    r = login(client, "alice")
    assert r.status_code == 429, r.text


def test_parallel_logins_with_the_right_password_all_succeed(client: httpx.Client) -> None:
    """Attempts in flight hold places under the limit only until they settle: a player's
    many devices behind one address, all at once, wait their turn and get in."""
    stored_user("alice")
    answers = parallel(20, lambda c, _i: login(c, "alice"), client)
    assert [r.status_code for r in answers] == [200] * 20, [r.text for r in answers]


def test_a_stranger_s_guesses_do_not_lock_the_player_out(client: httpx.Client) -> None:
    stored_user("alice")
    limit = get_settings().login_max_failures_per_name_and_client
    stranger, player = "203.0.113.7", "198.51.100.20"
    for _ in range(limit):
        assert login(client, "alice", "wrong-password", source=stranger).status_code == 401
    for password in ("wrong-password", f.PASSWORD):  # the stranger waits, right or wrong
        r = login(client, "alice", password, source=stranger)
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= get_settings().login_failure_window_seconds
    # The player, from their own address, signs in as usual.
    r = login(client, "alice", source=player)
    assert r.status_code == 200, r.text
    # The stranger may still guess other names (until the per-client limit).
    stored_user("bob")
    assert login(client, "bob", "wrong-password", source=stranger).status_code == 401


def test_the_per_name_limit_is_high_and_leaves_refresh_tokens_alone(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_user("alice")
    session = login(client, "alice", source="192.0.2.1").json()
    monkeypatch.setattr(settings, "login_max_failures_per_name", 8)
    # Guesses spread over many addresses, each under its own (name, client) limit.
    for i in range(8):
        assert login(client, "alice", "wrong-password", source=f"10.1.0.{i}").status_code == 401
    r = login(client, "alice", source="10.2.0.1")
    assert r.status_code == 429, r.text
    assert int(r.headers["Retry-After"]) >= 1
    # A player who holds a refresh token is not affected.
    r = client.post("/auth/refresh", json={"refresh_token": session["refresh_token"]})
    assert r.status_code == 200, r.text


def test_failures_per_client_are_limited_across_names(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "login_max_failures_per_client", 3)
    for i in range(3):
        assert login(client, f"guess{i}", "wrong-password", source="10.9.0.1").status_code == 401
    r = login(client, "guess-next", "wrong-password", source="10.9.0.1")
    assert r.status_code == 429, r.text
    assert login(client, "guess-next", "wrong-password", source="10.9.0.2").status_code == 401


def test_successful_logins_do_not_count_against_the_client(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Players behind one address (a café, a carrier's NAT) log in freely."""
    monkeypatch.setattr(settings, "login_max_failures_per_client", 3)
    for name in ("ann", "ben", "cat", "dan", "eve"):
        stored_user(name)
        assert login(client, name, source="10.7.0.1").status_code == 200


# --- which client the limits see ------------------------------------------------------


def test_a_forwarded_address_that_is_not_an_ip_cannot_rotate_the_client(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "login_max_failures_per_client", 3)
    for i in range(3):
        r = login(client, f"guess{i}", "wrong-password", source=f"not-an-address-{i}")
        assert r.status_code == 401, r.text
    # Every value that is not an IP address is the same client.
    r = login(client, "guess-next", "wrong-password", source="yet-another-name")
    assert r.status_code == 429, r.text
    # A real address is a client of its own.
    assert login(client, "guess-next", "wrong-password", source="10.9.0.2").status_code == 401


def test_an_ipv6_client_is_its_64_bit_prefix(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One host holds a whole /64; rotating within it is still one client."""
    monkeypatch.setattr(settings, "login_max_failures_per_client", 3)
    for i in range(3):
        r = login(client, f"guess{i}", "wrong-password", source=f"2001:db8:0:1::{i + 1:x}")
        assert r.status_code == 401, r.text
    r = login(client, "guess-next", "wrong-password", source="2001:db8:0:1:ffff::9")
    assert r.status_code == 429, r.text
    r = login(client, "guess-next", "wrong-password", source="2001:db8:0:2::1")
    assert r.status_code == 401, r.text


# --- sign-ups -------------------------------------------------------------------------


def test_many_concurrent_signups_from_one_client_are_limited(client: httpx.Client) -> None:
    limit = get_settings().signups_per_client_per_hour
    n = limit + 20

    def sign_up(c: httpx.Client, i: int) -> httpx.Response:
        body = {"user_name": f"newbie{i}", "password": f.PASSWORD}
        return c.post("/auth/signup", json=body, headers={"X-Forwarded-For": "10.3.0.1"})

    answers = parallel(n, sign_up, client)
    statuses = Counter(r.status_code for r in answers)
    assert set(statuses) <= {201, 429, 503}, statuses  # nothing 500
    assert statuses[429] >= n - limit, statuses
    for r in answers:
        if r.status_code in (429, 503):
            assert int(r.headers["Retry-After"]) >= 1
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == statuses[201]
    # Another client signs up as usual.
    r = client.post(
        "/auth/signup",
        json={"user_name": "elsewhere", "password": f.PASSWORD},
        headers={"X-Forwarded-For": "10.3.0.2"},
    )
    assert r.status_code == 201, r.text


# --- sign-ins per user ----------------------------------------------------------------


def test_sign_ins_per_user_are_limited_and_a_refused_refresh_keeps_its_token(
    client: httpx.Client, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored_user("alice")
    stored_user("bob")
    monkeypatch.setattr(settings, "sign_ins_per_user_per_minute", 3)
    first = login(client, "alice").json()
    assert login(client, "alice").status_code == 200
    token = client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    for r in (
        login(client, "alice"),
        client.post("/auth/refresh", json={"refresh_token": token["refresh_token"]}),
    ):
        assert r.status_code == 429, r.text
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        assert "sign-ins" in r.json()["detail"]
    assert login(client, "bob").status_code == 200  # per user
    # The refused refresh changed nothing: its token still works once the limit allows.
    monkeypatch.setattr(settings, "sign_ins_per_user_per_minute", 100)
    r = client.post("/auth/refresh", json={"refresh_token": token["refresh_token"]})
    assert r.status_code == 200, r.text


def test_a_login_asks_redis_once_before_the_hash_and_once_after(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12: the failed-login limits admit the attempt in one call; settling it and
    counting the sign-in is one more, after the hash. Recorded in the thread that
    hashes (the in-process server's), so other threads' Redis traffic does not count."""
    import redis.client

    stored_user("alice")
    steps: list[tuple[int, str]] = []
    real = security.password_hasher()
    real_command, real_pipeline = redis.client.Redis.execute_command, redis.client.Pipeline.execute

    class RecordingHasher:
        def verify(self, password_hash: str, password: str) -> bool:
            steps.append((threading.get_ident(), "hash"))
            return bool(real.verify(password_hash, password))

    def command(self: Any, *args: Any, **kwargs: Any) -> Any:
        steps.append((threading.get_ident(), f"redis {args[0]}"))
        return real_command(self, *args, **kwargs)

    def pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        steps.append((threading.get_ident(), "redis pipeline"))
        return real_pipeline(self, *args, **kwargs)

    monkeypatch.setattr(security, "password_hasher", RecordingHasher)
    monkeypatch.setattr(redis.client.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", pipeline)
    assert login(client, "alice").status_code == 200
    assert login(client, "alice", "wrong-password").status_code == 401
    monkeypatch.undo()

    hashing = [thread for thread, step in steps if step == "hash"]
    assert len(hashing) == 2
    for thread in set(hashing):  # each login: redis, hash, redis (a thread may run both)
        mine = [step for t, step in steps if t == thread]
        logins = hashing.count(thread)
        assert [step.split()[0] for step in mine] == ["redis", "hash", "redis"] * logins, mine


# --- the cap on concurrent password hashing -------------------------------------------


class CountingHasher:
    """The real argon2 hasher, counting how many calls run at once. With `hold`
    set, each call waits for it (the test releases it) before hashing."""

    def __init__(self, real: Any, hold: threading.Event | None = None) -> None:
        self.real = real
        self.hold = hold
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0
        self.calls = 0

    def _counted(self, work: Callable[[], Any]) -> Any:
        with self.lock:
            self.inside += 1
            self.calls += 1
            self.most = max(self.most, self.inside)
        try:
            if self.hold is not None:
                assert self.hold.wait(120), "the test never released the hasher"
            return work()
        finally:
            with self.lock:
                self.inside -= 1

    def hash(self, password: str) -> str:
        return str(self._counted(lambda: self.real.hash(password)))

    def verify(self, password_hash: str, password: str) -> bool:
        return bool(self._counted(lambda: self.real.verify(password_hash, password)))


@pytest.fixture
def hashing(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Install a CountingHasher; the slots are rebuilt for the settings the test sets."""
    real = security.password_hasher()
    security.hashing_slots.cache_clear()

    def install(cap: int, hold: threading.Event | None = None) -> CountingHasher:
        monkeypatch.setattr(settings, "hashing_concurrency", cap)
        security.hashing_slots.cache_clear()
        counting = CountingHasher(real, hold)
        monkeypatch.setattr(security, "password_hasher", lambda: counting)
        return counting

    yield install
    security.hashing_slots.cache_clear()


def test_at_most_the_cap_hashes_at_once(client: httpx.Client, hashing: Any) -> None:
    counting = hashing(2)
    security.verify_password("warm-up", None)  # the dummy hash, made once

    def guess(c: httpx.Client, i: int) -> httpx.Response:
        return login(c, f"nobody{i}", "wrong-password", source=f"10.4.0.{i}")

    answers = parallel(16, guess, client)
    assert [r.status_code for r in answers] == [401] * 16, [r.text for r in answers]
    assert counting.calls >= 16
    assert counting.most <= 2, counting.most


def test_a_request_that_finds_no_free_slot_in_time_gets_503(
    client: httpx.Client, hashing: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    security.verify_password("warm-up", None)  # the dummy hash, made once
    hold = threading.Event()
    counting = hashing(1, hold)
    monkeypatch.setattr(settings, "hashing_wait_seconds", 0.05)
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(login, client, "nobody1", "wrong-password")
        try:
            support.wait_until(lambda: counting.inside == 1, 30, "the first hash to start")
            with httpx.Client(base_url=client.base_url, timeout=30) as other:
                r = login(other, "nobody2", "wrong-password")
                assert r.status_code == 503, r.text
                assert int(r.headers["Retry-After"]) >= 1
                r = other.post("/auth/signup", json={"user_name": "late", "password": f.PASSWORD})
                assert r.status_code == 503, r.text
        finally:
            hold.set()
        assert first.result().status_code == 401
    assert login(client, "nobody3", "wrong-password").status_code == 401  # a free slot again
    with db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(User)) == 0
