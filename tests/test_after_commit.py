"""The one after-commit hook: what domain code queues on a session is sent exactly once
when the transaction commits, and never when it rolls back."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

import workers.publish  # noqa: F401  the senders this process registers at start
from models import User
from questline import outbox
from questline.catalog import cache
from questline.catalog import service as catalog
from questline.credentials import service as credentials
from questline.errors import Conflict
from questline.infra import after_commit, db
from tests import factories as f


@dataclass(frozen=True)
class Ping:
    n: int


@pytest.fixture
def sent() -> Iterator[list[object]]:
    """What the hook sends, per message type of interest, in this process."""
    received: list[object] = []
    kinds = (
        Ping,
        outbox.SignInStored,
        outbox.EventsStored,
        outbox.SignInReplayed,
        cache.CatalogChanged,
    )
    previous = {kind: after_commit.register(kind, received.append) for kind in kinds}
    yield received
    for kind, sender in previous.items():
        if sender is None:
            after_commit.unregister(kind)
        else:
            after_commit.register(kind, sender)


def test_a_commit_sends_each_message_once_in_order(sent: list[object]) -> None:
    with db.session_factory()() as session:
        after_commit.after_commit(session, Ping(1))
        after_commit.after_commit(session, Ping(2))
        assert sent == []  # nothing before the commit
        session.commit()
        assert sent == [Ping(1), Ping(2)]
        session.commit()  # a second commit of the same session sends nothing again
        after_commit.after_commit(session, Ping(3))
        session.commit()
    assert sent == [Ping(1), Ping(2), Ping(3)]


def test_a_rollback_sends_nothing_and_forgets(sent: list[object]) -> None:
    with db.session_factory()() as session:
        session.execute(select(1))
        after_commit.after_commit(session, Ping(1))
        session.rollback()
        session.commit()  # the next transaction does not inherit the message
    with db.session_factory()() as session:
        after_commit.after_commit(session, Ping(2))
        # closed without a commit

    def failing_unit_of_work() -> None:
        with db.transaction() as session:
            after_commit.after_commit(session, Ping(3))
            raise RuntimeError("the unit of work failed")

    with pytest.raises(RuntimeError):
        failing_unit_of_work()
    assert sent == []


def test_a_rolled_back_savepoint_drops_only_its_own_messages(sent: list[object]) -> None:
    with db.session_factory()() as session:
        after_commit.after_commit(session, Ping(1))
        savepoint = session.begin_nested()
        after_commit.after_commit(session, Ping(2))
        inner = session.begin_nested()
        after_commit.after_commit(session, Ping(3))
        inner.commit()
        savepoint.rollback()
        with session.begin_nested():
            after_commit.after_commit(session, Ping(4))
        assert after_commit.pending(session) == [Ping(1), Ping(4)]
        session.commit()
    assert sent == [Ping(1), Ping(4)]


def test_a_message_without_a_sender_is_dropped_and_a_failing_sender_breaks_nothing(
    sent: list[object],
) -> None:
    def broken(_message: object) -> None:
        raise RuntimeError("sender failed")

    after_commit.unregister(Ping)
    with db.transaction() as session:
        after_commit.after_commit(session, Ping(1))
        user_id = f.add_user(session).user_id
    after_commit.register(Ping, broken)
    with db.transaction() as session:
        after_commit.after_commit(session, Ping(2))
        session.get_one(User, user_id).timezone = "Europe/Paris"
    with db.transaction() as session:  # both commits stood
        assert session.get_one(User, user_id).timezone == "Europe/Paris"
    assert sent == []


def test_a_replay_announces_the_sign_in_only_when_it_revives_one(sent: list[object]) -> None:
    with db.transaction() as session:
        [event_id] = f.add_sign_ins(session, f.add_user(session).user_id)
        f.keep_from_sweeper(session, [event_id])
    assert outbox.revive(event_id)
    assert outbox.revive(10**12) is False
    assert sent == [outbox.SignInReplayed(event_id)]


def test_catalog_writes_announce_their_version_after_commit_only(
    sent: list[object], session: Session
) -> None:
    reward = catalog.create_reward(session, reward_name="Gold", reward_item="gold", reward_qty=1)
    assert sent == []
    session.commit()
    [created] = sent
    assert isinstance(created, cache.CatalogChanged)

    with pytest.raises(Conflict):  # a refused write rolls back: nothing is announced
        catalog.create_quest(
            session,
            name="sign-in-three-times",
            streak=1,
            duplication=1,
            reward_id=reward.reward_id,
        )
    session.rollback()
    catalog.update_quest(session, 1, streak=4)
    session.commit()
    assert sent == [created, cache.CatalogChanged(created.version + 1)]


def test_each_sign_in_is_announced_once_after_its_commit_and_failures_not_at_all(
    client: httpx.Client, sent: list[object]
) -> None:
    with db.transaction() as session:
        user_id = f.add_user(session, "announced").user_id
    body = {"user_name": "announced", "password": f.PASSWORD}
    login = client.post("/auth/login", json=body).json()
    refreshed = client.post("/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert refreshed.status_code == 200
    assert sent == [
        outbox.SignInStored(login["sign_in_id"], user_id),
        outbox.SignInStored(refreshed.json()["sign_in_id"], user_id),
    ]
    # A wrong password, and a used refresh token (whose family revocation is committed),
    # record no sign-in and announce none.
    assert client.post("/auth/login", json={**body, "password": "wrong-password"}).status_code
    reused = client.post("/auth/refresh", json={"refresh_token": login["refresh_token"]})
    assert reused.status_code == 401
    assert len(sent) == 2


def test_a_batch_of_gameplay_events_is_announced_once_after_its_commit(
    client: httpx.Client, sent: list[object]
) -> None:
    with db.transaction() as session:
        ann, bob = f.add_user(session).user_id, f.add_user(session).user_id
        secret = credentials.create(session, name="announcer", scopes=["events:write"]).api_key

    def send(*events: tuple[int, str]) -> httpx.Response:
        batch = [{"user_id": u, "type": "match_won", "idempotency_key": k} for u, k in events]
        return client.post("/events", json={"events": batch}, headers={"X-API-Key": secret})

    r = send((ann, "m1"), (bob, "m1"), (ann, "m1"))
    assert r.status_code == 202, r.text
    ann_id, bob_id, _ = (x["event_id"] for x in r.json()["results"])
    assert sent == [outbox.EventsStored(((ann_id, ann), (bob_id, bob)))]
    # Duplicates store nothing new and announce nothing; a refused batch neither.
    assert send((ann, "m1")).status_code == 202
    assert send((ann, "m2"), (10**12, "m3")).status_code == 422
    assert len(sent) == 1
