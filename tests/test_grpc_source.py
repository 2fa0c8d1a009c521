"""The gRPC catalog source (QUESTLINE_CATALOG_GRPC): a copy kept by WatchCatalog that
reconnects after the server restarts, refreshed before use whenever the transaction's
catalog version differs, never used stale (CatalogUnavailable, a transient error); and
the whole path with real processes: the server stopped, a quest changed over HTTP, events
sent, the server back, every event applied with the new definition."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from questline.catalog.grpc_source import CatalogUnavailable, GrpcCatalog
from questline.catalog.source import DatabaseCatalog
from questline.infra import db
from tests import factories as f
from tests import support
from tests.test_catalog_v2 import catalog_version, new_quest
from tests.test_events_api import make_key, make_users


@pytest.fixture
def admin() -> dict[str, str]:
    with db.transaction() as session:
        return f.bearer(f.add_user(session, role="admin").user_id, role="admin")


@pytest.fixture
def grpc_server(database: str) -> Iterator[support.harness.GrpcServer]:
    with support.start_grpc_server(name="grpc-source") as server:
        yield server


@pytest.fixture
def source(grpc_server: support.harness.GrpcServer) -> Iterator[GrpcCatalog]:
    copy = GrpcCatalog(grpc_server.target, timeout=5)
    yield copy
    copy.close()


def current(source: Any) -> Any:
    with db.transaction() as session:
        return source.current(session)


def test_the_copy_answers_what_the_database_answers(
    source: GrpcCatalog, client: httpx.Client, admin: dict[str, str]
) -> None:
    made = new_quest(client, admin, trigger={"event": "match_won"}, target=4)
    assert current(source).quest(made["quest_id"]).target == 4
    assert current(source).version == current(DatabaseCatalog()).version
    # A write is seen at once, whether or not the watch stream has brought it yet.
    r = client.patch(f"/quests/{made['quest_id']}", headers=admin, json={"target": 7})
    assert r.status_code == 200
    assert current(source).quest(made["quest_id"]).target == 7
    assert current(source).quests == current(DatabaseCatalog()).quests


def test_the_watch_stream_keeps_the_copy_without_a_refresh(
    source: GrpcCatalog, client: httpx.Client, admin: dict[str, str]
) -> None:
    support.wait_until(lambda: source.version is not None, 30, "the first catalog")
    made = new_quest(client, admin, trigger={"event": "match_won"}, target=3)
    version = catalog_version()
    support.wait_until(lambda: source.version == version, 30, "the watch to bring the write")
    assert source.problem() == ""
    copy = current(source)
    assert copy.quest(made["quest_id"]) is not None


def test_a_server_that_never_answered_makes_evaluation_wait(database: str) -> None:
    dead = GrpcCatalog(f"127.0.0.1:{support.free_port()}", timeout=1)
    try:
        with pytest.raises(CatalogUnavailable, match="did not answer"):
            current(dead)
        assert db.is_transient(CatalogUnavailable("x"))  # retried, never counted
        assert dead.problem() != ""
    finally:
        dead.close()


def test_the_copy_reconnects_after_the_server_restarts(
    grpc_server: support.harness.GrpcServer,
    source: GrpcCatalog,
    client: httpx.Client,
    admin: dict[str, str],
) -> None:
    support.wait_until(lambda: source.problem() == "", 30, "the watch stream")
    before = current(source)
    grpc_server.stop()
    support.wait_until(lambda: source.problem() != "", 30, "the source to see the server go")
    # At the version it holds, the copy still answers: nothing has changed.
    assert current(source).version == before.version
    made = new_quest(client, admin, trigger={"event": "match_won"}, target=2)
    with pytest.raises(CatalogUnavailable):
        current(source)  # behind, and nobody to ask: no answer rather than a stale one
    with support.start_grpc_server(
        port=grpc_server.port, metrics_port=grpc_server.metrics_port, name="grpc-again"
    ):
        support.wait_until(lambda: source.problem() == "", 30, "the watch to reconnect")
        support.wait_until(
            lambda: source.version == catalog_version(), 30, "the copy to catch up"
        )
        assert current(source).quest(made["quest_id"]) is not None


# --- the whole path, with real processes ------------------------------------------------


def _status(client: httpx.Client, key: str, event_id: int) -> str:
    r = client.get(f"/events/{event_id}", headers={"X-API-Key": key})
    assert r.status_code == 200, r.text
    status: str = r.json()["status"]
    return status


def _readiness(url: str) -> tuple[int, dict[str, Any]]:
    r = httpx.get(f"{url}/readyz", timeout=10)
    return r.status_code, r.json()


@pytest.mark.usefixtures("no_worker")
def test_events_wait_for_the_catalog_server_and_apply_with_the_new_definition(
    client: httpx.Client, admin: dict[str, str]
) -> None:
    key = make_key()
    (user,) = make_users()
    quest = new_quest(client, admin, trigger={"event": "match_won"}, target=5)["quest_id"]
    grpc_server = support.start_grpc_server(name="grpc-outage")
    target = {"QUESTLINE_CATALOG_GRPC": grpc_server.target}
    processing = support.start_server("api.processing.main:app", name="processing-grpc", **target)
    worker = support.start_worker(name="worker-grpc", **target)
    try:
        # The worker's copy is loaded and current: one event applied over gRPC.
        r = client.post(
            "/events",
            headers={"X-API-Key": key},
            json={"events": [{"user_id": user, "type": "match_won", "idempotency_key": "w"}]},
        )
        assert r.status_code == 202, r.text
        warm = r.json()["results"][0]["event_id"]
        support.wait_until(lambda: _status(client, key, warm) == "processed", 60, "the warm-up")
        support.wait_until(
            lambda: _readiness(processing.url)[0] == 200, 30, "processing to be ready"
        )
        assert _readiness(processing.url)[1]["checks"]["catalog_grpc"] == "ok"

        grpc_server.stop()
        support.wait_until(
            lambda: _readiness(processing.url)[0] == 503, 30, "readiness to name the catalog"
        )
        assert _readiness(processing.url)[1]["failed"] == ["catalog_grpc"]

        # target 5 -> 2: the warm-up and one more event complete it under the new rule.
        r = client.patch(f"/quests/{quest}", headers=admin, json={"target": 2})
        assert r.status_code == 200, r.text
        r = client.post(
            "/events",
            headers={"X-API-Key": key},
            json={
                "events": [
                    {"user_id": user, "type": "match_won", "idempotency_key": f"e{i}"}
                    for i in range(3)
                ]
            },
        )
        assert r.status_code == 202, r.text
        sent = [result["event_id"] for result in r.json()["results"]]
        support.wait_until(
            lambda: "CatalogUnavailable" in worker.output(), 60, "the worker to meet the outage"
        )
        assert [_status(client, key, e) for e in sent] == ["pending"] * 3

        again = support.start_grpc_server(
            port=grpc_server.port, metrics_port=grpc_server.metrics_port, name="grpc-back"
        )
        try:
            support.wait_until(
                lambda: all(_status(client, key, e) == "processed" for e in sent),
                90,
                "the events to be applied once the catalog is back",
            )
            support.wait_until(
                lambda: _readiness(processing.url)[0] == 200, 30, "processing to be ready again"
            )
        finally:
            again.stop()
    finally:
        worker.stop()
        processing.stop()
        grpc_server.stop()
    # Four events in all under target 2 (the last three applied after the change): two
    # completions; under the old target 5 there would be none.
    with db.transaction() as session:
        assert f.progress(session, user, quest) == (0, 2)
        assert len(f.rewards(session, user, quest)) == 2


@pytest.mark.usefixtures("no_worker")
def test_a_pool_child_forked_after_the_main_process_used_grpc_reads_the_catalog(
    grpc_server: support.harness.GrpcServer,
) -> None:
    """The sweeper runs in the worker's main process, so that process holds a gRPC channel
    when Celery forks a replacement for a dead pool child; the child makes its own."""
    import signal

    from sqlalchemy import select

    from models import Event
    from tests.factories import GameEvent
    from workers.tasks import process_sign_in

    with db.transaction() as session:
        quest = f.add_v2_quest(session, target=1, trigger={"event": "match_won"}).quest_id
        user = f.add_user(session).user_id

    def pending() -> int:
        with db.transaction() as session:
            unprocessed = select(Event.event_id).where(
                Event.user_id == user, Event.type == "match_won", Event.processed_at.is_(None)
            )
            return len(list(session.scalars(unprocessed)))

    worker = support.start_worker(
        concurrency=1, name="worker-grpc-fork", QUESTLINE_CATALOG_GRPC=grpc_server.target
    )
    try:
        with db.transaction() as session:  # no wake-up: the main process's sweeper takes it
            f.add_events(session, user, [GameEvent("match_won", f.utcnow())])
        support.wait_until(lambda: pending() == 0, 60, "the sweeper to apply the event")
        assert "sweeper applied" in worker.output()
        (child,) = support.harness.children_of(worker.pid)
        support.harness.send_signal(child, signal.SIGKILL)
        support.wait_until(
            lambda: [c for c in support.harness.children_of(worker.pid) if c != child],
            60,
            "a new pool child",
        )
        with db.transaction() as session:  # the new child alone may take this one
            ids = f.add_events(session, user, [GameEvent("match_won", f.utcnow())])
            f.keep_from_sweeper(session, ids)
        process_sign_in.delay(ids[0])  # by id: the drain skips it as the sweeper does
        support.wait_until(lambda: pending() == 0, 60, "the new child to apply the event")
    finally:
        worker.stop()
    with db.transaction() as session:
        assert f.progress(session, user, quest)[1] == 2


def test_processing_shows_the_player_quests_from_the_grpc_copy(
    grpc_server: support.harness.GrpcServer,
    client: httpx.Client,
    admin: dict[str, str],
    make_player: Any,
) -> None:
    target = {"QUESTLINE_CATALOG_GRPC": grpc_server.target}
    processing = support.start_server("api.processing.main:app", name="processing-views", **target)
    try:
        player = make_player()
        new_quest(client, admin, trigger={"event": "match_won"}, target=3, period="day")
        over_grpc = httpx.get(f"{processing.url}/me/quests", headers=player.headers, timeout=30)
        assert over_grpc.status_code == 200, over_grpc.text
        assert over_grpc.json() == player.get("/me/quests").json()  # this app: the database
        # The copy is what processing reads: once it cannot be brought up to date, the
        # answer is 503 (retry), never the list from before the write.
        grpc_server.stop()
        new_quest(client, admin, trigger={"event": "match_won"}, target=5)
        r = httpx.get(f"{processing.url}/me/quests", headers=player.headers, timeout=30)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"] == "1"
        assert "catalog server" in r.json()["detail"]
    finally:
        processing.stop()
