"""A ban applies within 1 second on every service (API.md, v2), without each request
reading the user row: bans are pushed to every process (after-commit, Redis pub/sub)
and each process confirms its ban list from the database at most
bans.LEASE_SECONDS ago, so the bound holds when a process misses the message."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace

import httpx
import pytest

import harness
from models.base import utcnow
from questline import security
from questline.errors import Banned, Unauthorized
from questline.infra import db
from questline.users import bans, repository
from tests import factories as f
from tests import support

# The contract's bound: a request started this long after the ban was answered is 403.
BOUND = 1.0

# One read route per service, each answered by the token check alone (no user row).
READS = {
    "api.auth.main:app": "/auth/me",
    "api.catalog.main:app": "/quests",
    "api.processing.main:app": "/me/wallet",
}


@dataclass(frozen=True)
class Answer:
    service: str
    started: float  # time.monotonic() just before the request was sent
    status: int
    finished: float  # time.monotonic() once its answer came


def _servers(redis_for_readers: str) -> Iterator[dict[str, harness.Server]]:
    """The three services, two uvicorn processes each. The catalog and processing
    services listen for bans on `redis_for_readers`; the auth service, which bans,
    uses the test Redis."""
    servers: dict[str, harness.Server] = {}
    try:
        for app in READS:
            env = {} if app == "api.auth.main:app" else {"QUESTLINE_REDIS_URL": redis_for_readers}
            servers[app] = harness.start_server(
                app,
                support.child_env(**env),
                support.DATA_DIR,
                name=app.split(".")[1],
                options=["--workers", "2"],
            )
        yield servers
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture(params=["published", "redis-unreachable"])
def servers(request: pytest.FixtureRequest) -> Iterator[dict[str, harness.Server]]:
    """`published`: every process hears the ban on Redis. `redis-unreachable`: the
    reading services' Redis is a port nobody listens on, so they never hear it and only
    the database confirms it."""
    if request.param == "published":
        readers_redis = support.REDIS_URL
    else:
        readers_redis = f"redis://127.0.0.1:{harness.free_port()}/0"
    yield from _servers(readers_redis)


def test_a_ban_is_refused_on_every_service_within_a_second_under_load(
    servers: dict[str, harness.Server],
) -> None:
    with db.transaction() as session:
        player = f.add_user(session).user_id
        admin = f.add_user(session, role="admin").user_id
    headers = f.bearer(player)

    answers: list[Answer] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(app: str) -> None:
        url = f"{servers[app].url}{READS[app]}"
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                started = time.monotonic()
                status = client.get(url, headers=headers).status_code
                with lock:
                    answers.append(Answer(app, started, status, time.monotonic()))

    def served(app: str) -> int:
        with lock:
            return sum(1 for a in answers if a.service == app and a.status == 200)

    with ThreadPoolExecutor(max_workers=4 * len(READS)) as pool:
        loads = [pool.submit(load, app) for app in READS for _ in range(4)]
        # Every service answers the player before the ban (the control) ...
        harness.wait_until(lambda: all(served(app) >= 20 for app in READS), 60, "answers")
        sent = time.monotonic()
        r = httpx.post(
            f"{servers['api.auth.main:app'].url}/auth/users/{player}/ban",
            headers=f.bearer(admin, role="admin"),
            timeout=30,
        )
        answered = time.monotonic()
        assert r.status_code == 200, r.text

        # ... and keeps being asked until each has answered plenty of requests started
        # more than BOUND after the ban was answered.
        def late(app: str) -> int:
            with lock:
                return sum(1 for a in answers if a.service == app and a.started > answered + BOUND)

        harness.wait_until(lambda: all(late(app) >= 20 for app in READS), 60, "late answers")
        stop.set()
        for done in loads:
            done.result()

    # The control: requests answered before the ban was sent (one still in flight when
    # it commits may rightly be refused).
    before = [a for a in answers if a.finished < sent]
    assert before
    assert all(a.status == 200 for a in before)
    for app in READS:
        ok = [a.started - answered for a in answers if a.service == app and a.status == 200]
        print(f"{app}: last 200 started {max(ok):+.3f} s after the ban was answered")
        after = [a for a in answers if a.service == app and a.started > answered + BOUND]
        assert {a.status for a in after} == {403}, (app, sorted({a.status for a in after}))


def test_a_missed_ban_is_read_from_the_database() -> None:
    """In this process: a ban committed where nobody hears of it (written behind the
    service's back, no message) is refused once the list is confirmed again, as every
    request does when the lease runs out (and the background renewal before that)."""
    with db.transaction() as session:
        player = f.add_user(session).user_id
    ban_list = bans.ban_list
    ban_list.forget()
    ban_list.confirm(player)
    assert ban_list.knows(player)
    ban_list.refuse_if_banned(player)  # not banned: the control

    with db.transaction() as session:
        repository.ban(session, player, now=utcnow())  # no UserBanned queued: unheard

    def refused() -> bool:  # what api.deps.token_user does for each request
        if not (ban_list.fresh() and ban_list.knows(player)):
            ban_list.confirm(player)
        try:
            ban_list.refuse_if_banned(player)
        except Banned:
            return True
        return False

    harness.wait_until(refused, 10, "the ban to be read from the database")


def test_a_ban_committed_here_is_known_here_at_once() -> None:
    from questline.users import service as users

    with db.transaction() as session:
        player = f.add_user(session).user_id
        admin = f.add_user(session, role="admin").user_id
    bans.ban_list.forget()
    bans.ban_list.confirm(player)
    with db.transaction() as session:
        users.ban(session, user_id=player, by=admin)
        bans.ban_list.refuse_if_banned(player)  # not before the commit
    with pytest.raises(Banned):
        bans.ban_list.refuse_if_banned(player)


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token, ttl = security.mint_access_token(7, "player")
    claims = security.decode_access_token(token)
    assert token in security._verified  # the second use is not verified again
    assert security.decode_access_token(token) == claims
    leeway = security.get_settings().jwt_leeway_seconds
    later = time.time() + ttl + leeway + 1
    monkeypatch.setattr(security, "time", SimpleNamespace(time=lambda: later))
    with pytest.raises(Unauthorized, match="expired"):
        security.decode_access_token(token)
