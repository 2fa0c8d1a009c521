"""GET /me/stream over real HTTP: a streaming client against a live uvicorn server, real
Celery workers applying the sign-ins, real PostgreSQL and Redis pub/sub."""

from __future__ import annotations

import base64
import json
import time
from concurrent.futures import ThreadPoolExecutor
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from api.observability import REGISTRY
from models import EventType
from questline.credentials import service as credentials
from questline.infra import db
from questline.quests import live
from questline.quests import repository as quests_repository
from tests import factories, support
from tests.conftest import Player
from tests.sse import Message, SseStream

_keys = count(1)


def history(player: Player) -> list[dict[str, Any]]:
    """The player's whole history as /me/events shows it, oldest first."""
    r = player.get("/me/events", params={"limit": 500})
    assert r.status_code == 200, r.text
    return list(reversed(r.json()))


def stream(server: support.LiveServer, player: Player, **params: Any) -> SseStream:
    return SseStream(server.url, "/me/stream", headers=player.headers, params=params)


def quiet(server: support.LiveServer, player: Player, **params: Any) -> SseStream:
    """A stream with a token minted for the player, who never signs in: no sign-in for
    the suite's worker to apply after the test."""
    return SseStream(
        server.url, "/me/stream", headers=factories.bearer(player.user_id), params=params
    )


def settled(player: Player, sign_in_ids: list[int]) -> list[dict[str, Any]]:
    """The history once every sign-in given was applied."""
    for sign_in_id in sign_in_ids:
        player.wait_processed(sign_in_id)
    return history(player)


def items(messages: list[Message]) -> list[dict[str, Any]]:
    for m in messages:
        assert m.id == str(m.item["event_id"]), m
        assert m.event == m.item["type"], m
    return [m.item for m in messages]


def has_all(expected: list[dict[str, Any]]) -> Any:
    return lambda s: len(s.messages) >= len(expected)


# --- holding back what an earlier, uncommitted transaction may precede (pure) ---------


def snap(running: set[int], writers: set[int] | None = None) -> live.Snapshot:
    return live.Snapshot(frozenset(running), frozenset(running if writers is None else writers))


def test_settle_sends_everything_when_no_writer_runs() -> None:
    assert live.settle([5, 7], snap(set()), None, now=0) == (2, None)
    # Transactions of other databases cannot write our history.
    assert live.settle([5, 7], snap({10, 11}, writers=set()), None, now=0) == (2, None)
    assert live.settle([5, 7], None, None, now=0) == (2, None)  # SQLite: ids in commit order


def test_settle_holds_back_until_the_writers_of_that_moment_end() -> None:
    ready, held = live.settle([5, 7], snap({10, 11}), None, now=1)
    assert (ready, held) == (0, live.HeldBack(writers=frozenset({10, 11}), upto=7, since=1))
    # Transaction 11 still runs: nothing yet, even with a newer item.
    assert live.settle([5, 7, 9], snap({11, 12}), held, now=2) == (0, held)
    # 10 and 11 ended: 5 and 7 go; 9 waits for the writers of now.
    ready, held = live.settle([5, 7, 9], snap({12, 13}), held, now=3)
    assert (ready, held) == (2, live.HeldBack(writers=frozenset({12, 13}), upto=9, since=3))
    # An earlier item that committed meanwhile (6) goes first, in order.
    assert live.settle([6, 9], snap({14}), held, now=4) == (2, None)


def test_settle_holds_back_no_longer_than_the_limit() -> None:
    running = snap({10})
    _, held = live.settle([5], running, None, now=100)
    assert live.settle([5], running, held, now=100 + live.MAX_HOLD_SECONDS - 1) == (0, held)
    assert live.settle([5], running, held, now=100 + live.MAX_HOLD_SECONDS) == (1, None)


def test_snapshot_parses_postgres_text() -> None:
    assert live.Snapshot.parse("10:12:") == snap(set(), set())
    assert live.Snapshot.parse("10:12:10,11", ["11"]) == snap({10, 11}, {11})


def test_channel_names_the_redis_database() -> None:
    assert live.channel("redis://127.0.0.1:6379/13") == "questline:13:live"
    assert live.channel("redis://cache") == "questline:0:live"
    assert live.decode(live.encode([3, 1])) == [3, 1]
    assert live.decode("1,x") == []


# --- over HTTP --------------------------------------------------------------------------


def test_sign_ins_and_their_quest_items_arrive_as_me_events_shows_them(
    server: support.LiveServer, make_player: Any, worker: Any
) -> None:
    p = make_player()
    first = p.login()["sign_in_id"]
    with stream(server, p, after=0) as s:
        sign_ins = [first, p.login()["sign_in_id"], p.refresh()["sign_in_id"]]
        expected = settled(p, sign_ins)
        assert {i["type"] for i in expected} >= {
            EventType.SIGN_IN,
            EventType.QUEST_PROGRESS,
            EventType.QUEST_COMPLETED,
            EventType.REWARD_EARNED,
        }
        s.wait_for(has_all(expected), what="the whole history")
        claim = p.post("/me/quests/1/claim")
        assert claim.status_code == 200, claim.text
        expected = history(p)
        s.wait_for(has_all(expected), what="the claim")
        assert items(s.messages) == expected
        assert s.messages[-1].event == EventType.REWARD_CLAIMED


def test_without_a_starting_point_the_stream_starts_at_the_newest_item(
    server: support.LiveServer, make_player: Any, worker: Any
) -> None:
    p = make_player()
    before = settled(p, [p.login()["sign_in_id"]])
    with stream(server, p) as s:
        sign_in = p.refresh()["sign_in_id"]
        s.wait_messages(1)
        assert s.messages[0].item["event_id"] == sign_in > before[-1]["event_id"]


def test_resume_after_a_disconnect_with_last_event_id_or_after(
    server: support.LiveServer, make_player: Any, worker: Any
) -> None:
    p = make_player()
    with stream(server, p, after=0) as s:
        expected = settled(p, [p.login()["sign_in_id"], p.refresh()["sign_in_id"]])
        s.wait_for(has_all(expected))
    seen = items(s.messages)
    assert seen == expected
    last = s.last_event_id
    assert last == str(seen[-1]["event_id"])

    # While nobody listens: more sign-ins, applied by the worker.
    everything = settled(p, [p.refresh()["sign_in_id"], p.refresh()["sign_in_id"]])
    missed = everything[len(seen) :]
    assert missed
    assert missed[0]["event_id"] > int(last)

    resumed = SseStream(server.url, "/me/stream", headers={**p.headers, "Last-Event-ID": last})
    with resumed:
        resumed.wait_for(has_all(missed))
    with stream(server, p, after=last) as by_query:
        by_query.wait_for(has_all(missed))
    for again in (resumed, by_query):
        assert items(again.messages) == missed  # no gap, no duplicate
        assert seen + items(again.messages) == everything


def test_a_browser_reconnects_like_event_source(
    server: support.LiveServer, make_player: Any, worker: Any
) -> None:
    """EventSource cannot send headers: the token rides in the URL, and on reconnect the
    browser sends the same URL again plus Last-Event-ID, which wins over ?after."""
    p = make_player()
    p.login()
    url = {"after": 0, "access_token": p.token}
    first = SseStream(server.url, "/me/stream", params=url)
    with first:
        expected = settled(p, [p.refresh()["sign_in_id"]])
        first.wait_for(has_all(expected))
    more = settled(p, [p.refresh()["sign_in_id"], p.refresh()["sign_in_id"]])
    assert first.last_event_id is not None
    again = SseStream(
        server.url, "/me/stream", params=url, headers={"Last-Event-ID": first.last_event_id}
    )
    with again:
        again.wait_for(has_all(more[len(first.messages) :]))
    assert items(first.messages) + items(again.messages) == more


def test_a_heartbeat_comment_keeps_an_idle_stream_open(
    server: support.LiveServer, make_player: Any
) -> None:
    p = make_player()
    with quiet(server, p) as s:
        s.wait_for(lambda s: "heartbeat" in s.comments, what="a heartbeat comment")


@pytest.mark.parametrize(
    ("params", "headers"),
    [
        ({"after": -1}, {}),
        ({"after": "abc"}, {}),
        ({"after": 2**63}, {}),
        ({}, {"Last-Event-ID": "abc"}),
        ({}, {"Last-Event-ID": "-5"}),
    ],
)
def test_a_bad_starting_point_is_422(
    server: support.LiveServer, make_player: Any, params: Any, headers: Any
) -> None:
    p = make_player()
    r = httpx.get(
        f"{server.url}/me/stream",
        params=params,
        headers={**factories.bearer(p.user_id), **headers},
        timeout=10,
    )
    assert r.status_code == 422, r.text


def test_no_or_a_bad_token_is_401(server: support.LiveServer, make_player: Any) -> None:
    p = make_player()
    p.token = factories.bearer(p.user_id)["Authorization"].split()[1]
    forged = p.token[:-4] + ("AAAA" if not p.token.endswith("AAAA") else "BBBB")
    for params, headers in [
        ({}, {}),
        ({"access_token": forged}, {}),
        ({}, {"Authorization": f"Bearer {forged}"}),
        # The header wins over the query parameter.
        ({"access_token": p.token}, {"Authorization": f"Bearer {forged}"}),
    ]:
        r = httpx.get(f"{server.url}/me/stream", params=params, headers=headers, timeout=10)
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_the_stream_closes_when_the_player_is_banned(
    server: support.LiveServer, make_player: Any, admin: Player
) -> None:
    p = make_player()
    with quiet(server, p) as s:
        r = admin.post(f"/auth/users/{p.user_id}/ban")
        assert r.status_code == 200, r.text
        s.wait_closed()
        assert "closed: the player is banned" in s.comments
    r = httpx.get(f"{server.url}/me/stream", headers=factories.bearer(p.user_id), timeout=10)
    assert r.status_code == 403


def test_the_stream_closes_when_the_token_expires(database: str) -> None:
    env = {"QUESTLINE_TOKEN_TTL_SECONDS": "3", "QUESTLINE_JWT_LEEWAY_SECONDS": "0"}
    with (
        support.start_server("api.main:app", name="short-tokens", **env) as app,
        httpx.Client(base_url=app.url, timeout=30) as client,
    ):
        p = Player(client, "short-lived")
        p.login()
        assert p.token is not None
        claims = json.loads(base64.urlsafe_b64decode(p.token.split(".")[1] + "=="))
        s = SseStream(app.url, "/me/stream", headers=p.headers).open()
        s.wait_closed()
        assert time.time() >= claims["exp"]
        assert "closed: the token expired" in s.comments
        r = client.get("/me/stream", headers=p.headers)
        assert r.status_code == 401


def test_no_other_players_item_ever_appears(
    server: support.LiveServer, make_player: Any, worker: Any
) -> None:
    """Many players stream at once while they and others play: sign-ins, refreshes,
    gameplay events, claims. Each stream gets its own history, all of it, once."""
    watchers = [make_player(f"watcher{i}") for i in range(12)]
    others = [make_player(f"other{i}") for i in range(12)]
    for p in watchers + others:
        p.login()
    with db.transaction() as session:
        key = credentials.create(session, name="game", scopes=["events:write"]).api_key
    streams = [stream(server, p, after=0).open() for p in watchers]
    try:

        def play(p: Player) -> list[int]:
            sign_ins = [p.refresh()["sign_in_id"] for _ in range(3)]
            r = p.client.post(
                "/events",
                headers={"X-API-Key": key},
                json={
                    "events": [
                        {"user_id": p.user_id, "type": "match.won", "idempotency_key": f"m{i}"}
                        for i in range(2)
                    ]
                },
            )
            assert r.status_code == 202, r.text
            return sign_ins

        with ThreadPoolExecutor(8) as pool:
            played = list(pool.map(play, watchers + others))
        everyone = zip(watchers + others, played, strict=True)
        expected = {p.user_id: settled(p, sign_ins) for p, sign_ins in everyone}
        for p in watchers:
            assert p.post("/me/quests/1/claim").status_code == 200
            expected[p.user_id] = history(p)
        for p, s in zip(watchers, streams, strict=True):
            s.wait_for(has_all(expected[p.user_id]), what=f"{p.name}'s history")
            assert items(s.messages) == expected[p.user_id], p.name
        foreign = {i["event_id"] for p in others for i in expected[p.user_id]}
        assert all(int(m.id or 0) not in foreign for s in streams for m in s.messages)
    finally:
        for s in streams:
            s.close()


def _add_history_item(session: Any, user_id: int) -> int:
    quests_repository.add_events(
        session,
        [{"user_id": user_id, "quest_id": 1, "type": EventType.QUEST_PROGRESS, "data": {}}],
    )
    return int(session.execute(text("SELECT max(event_id) FROM events")).scalar_one())


def test_a_lost_notification_only_delays(server: support.LiveServer, make_player: Any) -> None:
    p = make_player()
    with quiet(server, p) as s:
        # Written behind the after-commit hook's back: no message ever announces it.
        with db.transaction() as session:
            item = _add_history_item(session, p.user_id)
            session.info.pop("questline.after_commit", None)
        # Found by the periodic re-check. (The suite's worker may also apply the
        # player's sign-in meanwhile: its item is announced as usual.)
        s.wait_for(lambda s: any(m.item["event_id"] == item for m in s.messages), what="it")


def _holding() -> float:
    return REGISTRY.get_sample_value("questline_live_streams_holding") or 0.0


def test_an_item_waits_for_an_earlier_one_still_being_committed(
    server: support.LiveServer, make_player: Any
) -> None:
    """Ids come from a sequence, commits come in any order: item B (newer id) commits
    while A (older id) is still in its transaction. Sending B first would move the
    cursor past A, and A would never be sent; the stream holds B until A's transaction
    ends, then sends A, B."""
    p = make_player()
    with quiet(server, p) as s:
        slow = db.session_factory()()
        try:
            a = _add_history_item(slow, p.user_id)
            with db.transaction() as fast:
                b = _add_history_item(fast, p.user_id)
            assert b > a
            # The stream reads B and holds it back while A's transaction runs.
            support.wait_until(lambda: _holding() >= 1, 30, "the stream to hold B back")
            assert s.messages == []
            slow.commit()
        finally:
            slow.close()
        s.wait_for(lambda s: any(m.item["event_id"] == b for m in s.messages), what="B")
        # (The suite's worker may have applied the player's sign-in meanwhile: its item
        # came before A.)
        assert [m.item["event_id"] for m in s.messages if m.item["event_id"] >= a] == [a, b]


def test_a_writer_that_commits_between_the_read_and_the_check_is_waited_for(
    make_player: Any,
) -> None:
    """The window the stream test above cannot aim at: A's transaction commits after the
    read (which saw B, not A) and before the stream asks which writers run. It is not
    running any more, yet the read missed A: B must wait for a read that sees A."""
    from sqlalchemy import event

    p = make_player()
    slow = db.session_factory()()
    try:
        a = _add_history_item(slow, p.user_id)
        with db.transaction() as fast:
            b = _add_history_item(fast, p.user_id)
        reader = db.session_factory()()
        connection = reader.connection()
        statements = count()

        def commit_a_after_the_read(*_args: Any) -> None:
            if next(statements) == 0:  # the read of the items has just run
                slow.commit()

        event.listen(connection, "after_cursor_execute", commit_a_after_the_read)
        try:
            read = live.read_after(reader, user_id=p.user_id, after=b - 1)
        finally:
            event.remove(connection, "after_cursor_execute", commit_a_after_the_read)
            reader.close()
    finally:
        slow.close()
    assert [e.event_id for e in read.items] == [b]  # A committed only after the read
    ready, held = live.settle([b], read.snapshot, None, now=0.0)
    assert (ready, held is not None) == (0, True)
    # A's transaction has ended: the next read sees A, and both go, in order.
    with db.session_factory()() as again:
        second = live.read_after(again, user_id=p.user_id, after=a - 1)
    ids = [e.event_id for e in second.items]
    assert ids == [a, b]
    assert live.settle(ids, second.snapshot, held, now=1.0)[0] == 2


def test_embedded_mode_streams_live(tmp_path: Path) -> None:
    from tests.test_embedded import Embedded

    app = Embedded(tmp_path, QUESTLINE_STREAM_HEARTBEAT_SECONDS="1")
    try:
        p = Player(app.client, "embedded-player")
        first = p.login()["sign_in_id"]
        with SseStream(app.url, "/me/stream", headers=p.headers, params={"after": 0}) as s:
            expected = settled(p, [first, p.refresh()["sign_in_id"], p.refresh()["sign_in_id"]])
            s.wait_for(has_all(expected), what="the worker's items (another process)")
            assert p.post("/me/quests/1/claim").status_code == 200
            expected = history(p)
            s.wait_for(has_all(expected), what="the claim")
            assert items(s.messages) == expected
            assert not [c for c in s.comments if c.startswith("closed")]
    finally:
        app.stop()


def test_each_history_write_announces_its_player_after_commit(
    server: support.LiveServer, make_player: Any, admin: Player, worker: Any
) -> None:
    """Sign-ins (the API), the drain (a worker process), claims, gameplay events and a
    ban each publish their player on the Redis channel once committed."""
    import redis

    bus = redis.Redis.from_url(support.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    bus.subscribe(live.channel(support.REDIS_URL))
    p = make_player()

    def announced() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            message = bus.get_message(timeout=1)
            if message is not None and p.user_id in live.decode(message["data"]):
                return
        raise AssertionError("no announcement")

    try:
        sign_in = p.login()["sign_in_id"]
        announced()  # the sign-in, from this process's publisher
        p.wait_processed(sign_in)
        announced()  # its quest_progress, from the worker's
        with db.transaction() as session:
            key = credentials.create(session, name="announcer", scopes=["events:write"]).api_key
        event = {"user_id": p.user_id, "type": "match.won", "idempotency_key": "a1"}
        r = p.client.post("/events", headers={"X-API-Key": key}, json={"events": [event]})
        assert r.status_code == 202, r.text
        announced()
        for _ in range(2):
            p.wait_processed(p.refresh()["sign_in_id"])
        while bus.get_message(timeout=1) is not None:  # the sign-ins' and drains'
            pass
        assert p.post("/me/quests/1/claim").status_code == 200
        announced()
        assert admin.post(f"/auth/users/{p.user_id}/ban").status_code == 200
        announced()
    finally:
        bus.close()


def test_every_write_of_a_history_item_queues_a_live_update(session: Any) -> None:
    """Each path that stores an item of /me/events (or bans) wakes the player's streams:
    login, refresh (one SQL statement on PostgreSQL), gameplay events, the engine's and
    the claims' entries, a ban."""
    from datetime import timedelta
    from decimal import Decimal

    from models.base import utcnow
    from questline.credentials import service as credentials
    from questline.events import repository as events_repository
    from questline.events.validation import NewEvent
    from questline.infra import after_commit
    from questline.users import repository as users_repository
    from questline.users import service as users
    from tests import factories

    now = utcnow()
    alice, bob, admin = (factories.add_user(session) for _ in range(3))

    def queued_for(user_id: int) -> bool:
        found = any(
            isinstance(m, live.LiveUpdate) and user_id in m.user_ids
            for m in after_commit.pending(session)
        )
        session.info.pop("questline.after_commit", None)
        return found

    assert not queued_for(alice.user_id)
    users_repository.add_sign_in(session, alice.user_id, via="login", now=now)
    assert queued_for(alice.user_id)
    users_repository.add_refresh_token(
        session,
        "old",
        user_id=alice.user_id,
        family_id="f",
        now=now,
        expires_at=now + timedelta(days=1),
    )
    assert not queued_for(alice.user_id)
    signed_in = users_repository.rotate_refresh_token(
        session, "old", new_hash="new", now=now, expires_at=now + timedelta(days=1)
    )
    assert signed_in is not None
    assert queued_for(alice.user_id)
    api_key = credentials.create(session, name="game", scopes=["events:write"]).key
    events_repository.insert_new(
        session,
        [NewEvent(bob.user_id, "match.won", Decimal(1), {}, now, "k")],
        api_key_id=api_key.key_id,
        now=now,
    )
    assert queued_for(bob.user_id)
    _add_history_item(session, bob.user_id)
    assert queued_for(bob.user_id)
    users.ban(session, user_id=bob.user_id, by=admin.user_id)
    assert queued_for(bob.user_id)


def test_the_access_log_never_shows_a_query_token() -> None:
    import logging

    from api.processing.live import RedactAccessToken

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/me/stream?after=3&access_token=eyJ.secret.sig", "1.1", 200),
        None,
    )
    assert RedactAccessToken().filter(record)
    line = record.getMessage()
    assert "secret" not in line
    assert "/me/stream?after=3&access_token=[redacted]" in line
    assert RedactAccessToken in {type(f) for f in logging.getLogger("uvicorn.access").filters}
