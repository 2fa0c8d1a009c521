"""The catalog version: every catalog write bumps it in its own transaction, and
cached reads are keyed by it, so no reader trusts a copy older than the last write
it can see, whatever Redis missed while it was away."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from questline.catalog import cache, repository
from questline.catalog import service as catalog
from questline.errors import Conflict
from questline.infra import after_commit, db, migrate
from tests import factories as f
from tests import support
from tests.frozen_redis import OwnRedis, own_redis


def version() -> int:
    with db.transaction() as session:
        return repository.catalog_version(session)


def test_both_databases_migrate_to_one_version_row(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'questline.db'}"
    migrate.upgrade(url)
    engine = db.make_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, version FROM catalog_state")).all() == [(1, 1)]
    engine.dispose()
    with db.transaction() as session:  # the test database, on PostgreSQL
        rows = session.execute(sa.text("SELECT id FROM catalog_state")).all()
    assert rows == [(1,)]


def test_every_catalog_write_bumps_the_version_when_it_commits(session: Session) -> None:
    before = version()
    reward = catalog.create_reward(session, reward_name="Gold", reward_item="gold", reward_qty=2)
    quest = catalog.create_quest(
        session, name="daily", streak=1, duplication=1, reward_id=reward.reward_id
    )
    catalog.update_quest(session, quest.quest_id, streak=2)
    assert version() == before  # not before the commit ...
    session.commit()
    assert version() == before + 3  # ... and once per write

    with pytest.raises(Conflict):
        catalog.update_quest(session, quest.quest_id, name="sign-in-three-times")
    session.rollback()
    assert version() == before + 3  # a refused write counts for nothing


def test_reads_come_from_the_cache_until_the_version_moves(
    client: httpx.Client, session: Session
) -> None:
    """The negative control: a change written behind the catalog service's back (no
    version bump) is not seen, because reads are served from the cache; bumping the
    version, as every catalog write does, makes it visible at once."""
    headers = f.bearer(f.add_user(session).user_id)
    session.commit()
    assert client.get("/quests/1", headers=headers).json()["streak"] == 3
    with db.transaction() as s:
        s.execute(sa.text("UPDATE quests SET streak = 9 WHERE quest_id = 1"))
    assert client.get("/quests/1", headers=headers).json()["streak"] == 3
    cache.invalidate()
    assert client.get("/quests/1", headers=headers).json()["streak"] == 9


@pytest.fixture
def redis_of_its_own() -> Iterator[OwnRedis]:
    with own_redis() as server:
        yield server


def test_a_write_made_while_redis_is_down_is_read_at_once_after_it_returns(
    redis_of_its_own: OwnRedis,
) -> None:
    """Issue 8, must-fix 8: the write cannot tell Redis anything, and Redis comes back
    with the entries it had before; reads must still show the write at once."""
    with db.transaction() as session:
        player = f.bearer(f.add_user(session).user_id)
        admin = f.bearer(f.add_user(session, role="admin").user_id, role="admin")
    server = support.start_server(
        "api.catalog.main:app", name="catalog-outage", QUESTLINE_REDIS_URL=redis_of_its_own.url
    )
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            for path in ("/quests", "/quests/1"):  # fill the cache, in Redis and in process
                assert c.get(path, headers=player).json()
            stale = catalog_keys(redis_of_its_own)
            assert any(key.endswith(":quest:1") for key in stale), stale
            redis_of_its_own.client().save()

            redis_of_its_own.kill()
            r = c.patch("/quests/1", headers=admin, json={"streak": 4, "name": "four"})
            assert r.status_code == 200, r.text
            redis_of_its_own.start()
            assert catalog_keys(redis_of_its_own) == stale  # back with its old copies

            quest = c.get("/quests/1", headers=player).json()
            assert (quest["streak"], quest["name"]) == (4, "four")
            # ... read through Redis, which now also holds the new version's copy.
            fresh = catalog_keys(redis_of_its_own) - stale
            assert any(key.endswith(":quest:1") for key in fresh), fresh
            [listed] = c.get("/quests", headers=player).json()
            assert (listed["streak"], listed["name"]) == (4, "four")
    finally:
        server.stop()


def catalog_keys(server: OwnRedis) -> set[str]:
    return {str(key) for key in server.client().scan_iter("ql:catalog:*")}


def test_a_write_through_one_process_is_read_at_once_through_another_under_load() -> None:
    """The version lease (questline.catalog.cache): process B answers from memory while
    its version is fresh, so a PATCH through process A must wait out B's lease before it
    returns; then a read through B that starts after the answer shows the write."""
    with db.transaction() as session:
        player = f.bearer(f.add_user(session).user_id)
        admin = f.bearer(f.add_user(session, role="admin").user_id, role="admin")
    a = support.start_server("api.catalog.main:app", name="catalog-a")
    b = support.start_server("api.catalog.main:app", name="catalog-b")
    stop = threading.Event()

    def keep_reading() -> None:  # B's lease and copy stay fresh all along
        with httpx.Client(base_url=b.url, timeout=60) as c:
            while not stop.is_set():
                assert c.get("/quests", headers=player).status_code == 200

    readers = [threading.Thread(target=keep_reading) for _ in range(4)]
    try:
        for reader in readers:
            reader.start()
        with httpx.Client(timeout=60) as c:
            for streak in (4, 5, 6, 7, 8, 9):
                r = c.patch(f"{a.url}/quests/1", headers=admin, json={"streak": streak})
                assert r.status_code == 200, r.text
                [listed] = c.get(f"{b.url}/quests", headers=player).json()
                assert listed["streak"] == streak
                # The list's JSON, encoded once per version, is the quest route's own.
                assert listed == c.get(f"{b.url}/quests/1", headers=player).json()
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        a.stop()
        b.stop()


def test_a_commit_of_several_catalog_writes_waits_out_the_lease_once(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wait is per commit (after_commit's hold), not per write: applying a catalog
    file of many quests in one transaction returns one lease later, not one per quest."""
    waits: list[float] = []
    monkeypatch.setattr(after_commit, "time", SimpleNamespace(sleep=waits.append))
    reward = catalog.create_reward(session, reward_name="Gold", reward_item="gold", reward_qty=2)
    for n in range(3):
        catalog.create_quest(
            session, name=f"daily-{n}", streak=1, duplication=1, reward_id=reward.reward_id
        )
    assert waits == []  # nothing before the commit
    session.commit()
    assert waits == [cache.LEASE_SECONDS]
    session.commit()  # a commit with no catalog write does not wait
    assert waits == [cache.LEASE_SECONDS]
