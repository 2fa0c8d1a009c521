"""`questline grpc` as a real process on a loopback port: every RPC and every error code,
API keys in metadata, RecordEvents answering exactly as POST /events (the same detail for
the same bad batch), health, reflection, /metrics, a watch stream that sees an HTTP
catalog write, and a SIGTERM that lets a call in flight finish."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, text

from models import Event
from questline.catalog import wire
from questline.catalog.grpc_source import catalog_from
from questline.catalog.source import DatabaseCatalog
from questline.engine import QuestDef
from questline.grpc_gen.v1 import catalog_pb2, catalog_pb2_grpc, events_pb2, events_pb2_grpc
from questline.infra import db, migrate
from tests import support
from tests.test_catalog_v2 import catalog_version, new_quest
from tests.test_events_api import make_key, make_users, stored_count

# Low enough to reach in a test, the same for the gRPC server and this process's app.
PER_MINUTE = 600


@pytest.fixture(scope="module")
def grpc_server(database: str) -> Iterator[support.harness.GrpcServer]:
    with support.start_grpc_server() as server:
        yield server


@pytest.fixture
def channel(grpc_server: support.harness.GrpcServer) -> Iterator[grpc.Channel]:
    assert grpc_server.alive(), grpc_server.output()
    with grpc.insecure_channel(grpc_server.target) as ch:
        yield ch


@pytest.fixture
def catalog(channel: grpc.Channel) -> catalog_pb2_grpc.CatalogStub:
    return catalog_pb2_grpc.CatalogStub(channel)


@pytest.fixture
def events(channel: grpc.Channel) -> events_pb2_grpc.EventsStub:
    return events_pb2_grpc.EventsStub(channel)


@pytest.fixture
def admin() -> dict[str, str]:
    from tests import factories

    with db.transaction() as session:
        return factories.bearer(factories.add_user(session, role="admin").user_id, role="admin")


def code_of(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def record(
    stub: events_pb2_grpc.EventsStub, key: str | None, *batch: events_pb2.Event
) -> events_pb2.RecordEventsResponse:
    metadata = () if key is None else (("x-api-key", key),)
    answer: events_pb2.RecordEventsResponse = stub.RecordEvents(
        events_pb2.RecordEventsRequest(events=batch), metadata=metadata, timeout=30
    )
    return answer


def game_event(user_id: int, key: str, **fields: Any) -> events_pb2.Event:
    return events_pb2.Event(user_id=user_id, type="match_won", idempotency_key=key, **fields)


# --- health, reflection, metrics ----------------------------------------------


def test_health_says_serving_for_the_server_and_each_service(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "questline.v1.Catalog", "questline.v1.Events"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    # Negative control: a service the server does not have is NOT_FOUND.
    code, _ = code_of(
        lambda: health.Check(health_pb2.HealthCheckRequest(service="questline.v1.Nope"))
    )
    assert code is grpc.StatusCode.NOT_FOUND


def test_reflection_lists_and_describes_the_services(channel: grpc.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    requests = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="questline.v1.Events"),
    ]
    listed, described = list(stub.ServerReflectionInfo(iter(requests), timeout=10))
    names = {s.name for s in listed.list_services_response.service}
    assert {"questline.v1.Catalog", "questline.v1.Events", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # grpcurl reads these


def test_metrics_count_calls_by_method_and_code(
    grpc_server: support.harness.GrpcServer, catalog: catalog_pb2_grpc.CatalogStub
) -> None:
    code_of(lambda: catalog.GetQuest(catalog_pb2.GetQuestRequest(quest_id=987_654)))
    catalog.ListQuests(catalog_pb2.ListQuestsRequest())
    body = httpx.get(f"http://127.0.0.1:{grpc_server.metrics_port}/metrics", timeout=5).text
    assert (
        'questline_grpc_calls_total{code="NOT_FOUND",method="/questline.v1.Catalog/GetQuest"}'
        in body
    )
    assert 'code="OK",method="/questline.v1.Catalog/ListQuests"' in body
    assert 'questline_grpc_call_seconds_count{method="/questline.v1.Catalog/ListQuests"}' in body


# --- Catalog ---------------------------------------------------------------------


def test_get_quest_answers_as_get_quests_id(
    catalog: catalog_pb2_grpc.CatalogStub, client: httpx.Client, admin: dict[str, str]
) -> None:
    made = new_quest(
        client,
        admin,
        trigger={"event": "match_won", "where": {"mode": "ranked", "kills": {"gte": 3}}},
        measure="sum",
        target=500,
        period="week",
        reset_at="04:30",
        week_starts_on="sunday",
        timezone="Europe/Paris",
        starts_at="2026-01-01T00:00:00+00:00",
        claim_within_seconds=3600,
    )
    answer = catalog.GetQuest(catalog_pb2.GetQuestRequest(quest_id=made["quest_id"]), timeout=10)
    assert answer.catalog_version == catalog_version()
    http = client.get(f"/quests/{made['quest_id']}", headers=admin).json()
    view = wire.quest_view(answer.quest)
    assert {**view, "starts_at": datetime.fromisoformat(view["starts_at"])} == {
        **http,
        "starts_at": datetime.fromisoformat(http["starts_at"]),
    }
    assert answer.quest.invalid_reason == ""


def test_get_quest_error_codes(catalog: catalog_pb2_grpc.CatalogStub) -> None:
    def get(quest_id: int) -> Any:
        return lambda: catalog.GetQuest(catalog_pb2.GetQuestRequest(quest_id=quest_id))

    assert code_of(get(424_242)) == (grpc.StatusCode.NOT_FOUND, "quest not found")
    assert code_of(get(0))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(get(-5))[0] is grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(get(1))[0] is grpc.StatusCode.OK


def test_list_quests_gives_the_engine_the_same_definitions_as_the_database(
    catalog: catalog_pb2_grpc.CatalogStub, client: httpx.Client, admin: dict[str, str]
) -> None:
    new_quest(
        client,
        admin,
        trigger={
            "event": "item_bought",
            "where": {
                "shop": {"in": ["main", "event"]},
                "price": {"gte": 1.5, "lte": 99},
                "gift": {"ne": True},
                "tier": 2,
            },
        },
        measure="consecutive",
        target=3,
        period="day",
        grace_periods=1,
        duplication=4,
        max_per_period=None,
        ends_at="2030-05-01T12:00:00+00:00",
    )
    new_quest(client, admin, name="inactive-one", active=False)
    answer = catalog.ListQuests(catalog_pb2.ListQuestsRequest(), timeout=10)
    http = client.get("/quests", headers=admin).json()
    assert [q.quest_id for q in answer.quests] == [q["quest_id"] for q in http]
    with db.transaction() as session:
        expected = DatabaseCatalog().current(session)
    over_grpc = catalog_from(answer.catalog_version, list(answer.quests))
    assert over_grpc.version == expected.version
    assert [_unordered(q) for q in over_grpc.quests] == [_unordered(q) for q in expected.quests]
    assert len(over_grpc.quests) >= 2


def _unordered(quest: QuestDef) -> QuestDef:
    """The quest with its conditions in one order: all must hold, so order means nothing
    (and a protobuf map keeps none)."""
    where = tuple(sorted(quest.trigger.where, key=lambda c: (c.attr, c.op.value)))
    return replace(quest, trigger=replace(quest.trigger, where=where))


def test_a_quest_the_engine_refuses_travels_as_invalid(
    catalog: catalog_pb2_grpc.CatalogStub,
) -> None:
    from tests import factories

    with db.transaction() as session:
        quest = factories.add_quest(session, streak=2, duplication=1)
        quest_id = quest.quest_id
    with db.transaction() as session:  # written by hand, past the API's checks
        session.execute(
            text("UPDATE quests SET trigger = :t WHERE quest_id = :q"),
            {"t": '{"event": "match_won", "where": {"x": {"between": [1, 2]}}}', "q": quest_id},
        )
        factories.catalog_changed(session)
    answer = catalog.ListQuests(catalog_pb2.ListQuestsRequest(), timeout=10)
    refused = next(q for q in answer.quests if q.quest_id == quest_id)
    assert "between" in refused.invalid_reason
    built = catalog_from(answer.catalog_version, list(answer.quests))
    assert [b.quest_id for b in built.broken_for("match_won")] == [quest_id]
    with db.transaction() as session:
        assert DatabaseCatalog().current(session).broken == built.broken


def test_watch_sees_an_http_write_promptly(
    catalog: catalog_pb2_grpc.CatalogStub, client: httpx.Client, admin: dict[str, str]
) -> None:
    stream = catalog.WatchCatalog(catalog_pb2.WatchCatalogRequest())
    arrived: list[tuple[float, catalog_pb2.CatalogChange]] = []

    def read() -> None:
        try:
            for change in stream:
                arrived.append((time.monotonic(), change))
        except grpc.RpcError:
            pass  # cancelled below

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # The fixtures reset the catalog by hand (no announcement): let the poll catch up.
        before = catalog_version()
        support.wait_until(
            lambda: any(c.catalog_version == before for _, c in arrived), 10, "the current catalog"
        )
        r = client.patch("/quests/1", headers=admin, json={"target": 4, "streak": 4})
        assert r.status_code == 200, r.text
        written = time.monotonic()
        version = catalog_version()
        support.wait_until(
            lambda: any(c.catalog_version >= version for _, c in arrived),
            10,
            "the watch stream to announce the write",
        )
    finally:
        stream.cancel()
        reader.join(5)
    at, change = next((at, c) for at, c in arrived if c.catalog_version >= version)
    delay_ms = (at - written) * 1000
    print(f"WatchCatalog delay after the HTTP write returned: {delay_ms:.1f} ms")
    assert next(q for q in change.quests if q.quest_id == 1).target == 4
    # Generous, far above the 100 ms aim, so that a slow machine does not fail it; the
    # figure is printed (and is in docs/performance.md).
    assert delay_ms < 5000


def test_watch_skips_the_version_the_caller_knows(
    catalog: catalog_pb2_grpc.CatalogStub, client: httpx.Client, admin: dict[str, str]
) -> None:
    known = catalog_version()
    stream = catalog.WatchCatalog(catalog_pb2.WatchCatalogRequest(known_version=known))
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(next, stream)
        time.sleep(0.3)  # not a speed assumption: nothing may come, however long we wait
        assert not first.done()
        r = client.patch("/quests/1", headers=admin, json={"description": "x"})
        assert r.status_code == 200
        assert first.result(timeout=10).catalog_version > known
    stream.cancel()


# --- Events -------------------------------------------------------------------------


def test_record_events_accepts_then_answers_duplicates_with_the_first_id(
    events: events_pb2_grpc.EventsStub,
) -> None:
    key = make_key()
    (user,) = make_users()
    moment = datetime.now(UTC) - timedelta(minutes=5)
    from questline.catalog.wire import timestamp

    answer = record(
        events,
        key,
        game_event(
            user,
            "a",
            value=2.5,
            attrs={
                "mode": events_pb2.AttrValue(string_value="ranked"),
                "kills": events_pb2.AttrValue(int_value=7),
                "ratio": events_pb2.AttrValue(number_value=0.25),
                "win": events_pb2.AttrValue(bool_value=True),
            },
            occurred_at=timestamp(moment),
        ),
        game_event(user, "b"),
        game_event(user, "a"),
    )
    statuses = [(r.idempotency_key, r.status) for r in answer.results]
    assert statuses == [
        ("a", events_pb2.EVENT_STATUS_ACCEPTED),
        ("b", events_pb2.EVENT_STATUS_ACCEPTED),
        ("a", events_pb2.EVENT_STATUS_DUPLICATE),
    ]
    assert answer.results[0].event_id == answer.results[2].event_id
    again = record(events, key, game_event(user, "b", value=9))
    assert again.results[0].event_id == answer.results[1].event_id
    assert again.results[0].status == events_pb2.EVENT_STATUS_DUPLICATE
    with db.transaction() as session:
        stored = session.get(Event, answer.results[0].event_id)
        assert stored is not None
        assert float(stored.value) == 2.5
        assert stored.attrs == {"mode": "ranked", "kills": 7, "ratio": 0.25, "win": True}
        assert abs(stored.occurred_at - moment) < timedelta(milliseconds=1)
        other = session.get(Event, answer.results[1].event_id)
        assert other is not None
        assert float(other.value) == 1


def test_api_keys_in_metadata(events: events_pb2_grpc.EventsStub) -> None:
    (user,) = make_users()
    batch = game_event(user, "k")
    assert code_of(lambda: record(events, None, batch))[0] is grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: record(events, "ql_nope", batch))[0] is grpc.StatusCode.UNAUTHENTICATED
    backfill_only = make_key(["events:backfill"])
    code, details = code_of(lambda: record(events, backfill_only, batch))
    assert code is grpc.StatusCode.PERMISSION_DENIED
    assert "events:write" in details
    from tests import factories

    token = factories.bearer(user)["Authorization"].removeprefix("Bearer ")
    code, _ = code_of(lambda: record(events, token, batch))  # a player token is never a key
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert stored_count() == 0
    assert code_of(lambda: record(events, make_key(), batch))[0] is grpc.StatusCode.OK
    assert stored_count() == 1


def test_a_revoked_key_stops_at_once(events: events_pb2_grpc.EventsStub) -> None:
    from questline.credentials import service as credentials

    key = make_key()
    (user,) = make_users()
    assert code_of(lambda: record(events, key, game_event(user, "1")))[0] is grpc.StatusCode.OK
    with db.transaction() as session:
        for row in credentials.list_keys(session):
            credentials.revoke(session, key_id=row.key_id)
    # The server process remembers the key; its first refusal after the revocation (an
    # invalid event) is still UNAUTHENTICATED, and so is everything after.
    invalid = events_pb2.Event(user_id=user, type="Bad Type", idempotency_key="2")
    code, _ = code_of(lambda: record(events, key, invalid))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    code, _ = code_of(lambda: record(events, key, game_event(user, "2")))
    assert code is grpc.StatusCode.UNAUTHENTICATED
    assert stored_count() == 1


BAD_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("type", {"type": "Bad Type"}),
    ("type", {"type": "sign_in"}),
    ("type", {"type": ""}),
    ("user_id", {"user_id": 0}),
    ("user_id", {"user_id": 999_999_999}),
    ("value", {"value": -1.0}),
    ("value", {"value": 2e9}),
    ("value", {"value": 0.1234567}),
    ("idempotency_key", {"idempotency_key": ""}),
    ("idempotency_key", {"idempotency_key": "x" * 256}),
    ("occurred_at", {"occurred_at_offset": timedelta(minutes=5)}),
    ("occurred_at", {"occurred_at_offset": -timedelta(days=3)}),
    ("attrs", {"attrs": {f"a{i}": 1 for i in range(17)}}),
    ("attrs.name", {"attrs": {"name": "x" * 257}}),
]


@pytest.mark.parametrize(("field", "change"), BAD_EVENTS, ids=[f for f, _ in BAD_EVENTS])
def test_an_invalid_event_is_invalid_argument_as_http_s_422_and_stores_nothing(
    events: events_pb2_grpc.EventsStub, client: httpx.Client, field: str, change: dict[str, Any]
) -> None:
    key = make_key()
    (user,) = make_users()
    good = {"user_id": user, "type": "match_won", "idempotency_key": "ok"}
    bad = {**good, "idempotency_key": "bad", **change}
    now = datetime.now(UTC)
    json_bad = {k: v for k, v in bad.items() if k != "occurred_at_offset"}
    message = events_pb2.Event(
        user_id=bad["user_id"], type=bad["type"], idempotency_key=bad["idempotency_key"]
    )
    if "value" in bad:
        message.value = bad["value"]
    for name, value in bad.get("attrs", {}).items():
        if isinstance(value, str):
            message.attrs[name].string_value = value
        else:
            message.attrs[name].int_value = value
    if "occurred_at_offset" in bad:
        moment = now + bad["occurred_at_offset"]
        message.occurred_at.CopyFrom(wire.timestamp(moment))
        json_bad["occurred_at"] = moment.isoformat()
    code, details = code_of(lambda: record(events, key, events_pb2.Event(**good), message))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith(f"events[1].{field}"), details
    http = client.post("/events", json={"events": [good, json_bad]}, headers={"X-API-Key": key})
    assert http.status_code == 422
    assert http.json()["detail"] == details
    assert stored_count() == 0


def test_an_empty_or_oversized_batch_is_invalid(events: events_pb2_grpc.EventsStub) -> None:
    key = make_key()
    (user,) = make_users()
    code, details = code_of(lambda: record(events, key))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "1 to 1000" in details
    many = [game_event(user, f"k{i}") for i in range(1001)]
    code, details = code_of(lambda: record(events, key, *many))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "got 1001" in details
    attr = events_pb2.Event(user_id=user, type="x", idempotency_key="a")
    attr.attrs["empty"].SetInParent()  # an AttrValue with no kind
    code, details = code_of(lambda: record(events, key, attr))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "attrs.empty" in details
    assert stored_count() == 0


def test_over_the_per_user_limit_is_resource_exhausted_with_retry_after(
    events: events_pb2_grpc.EventsStub,
) -> None:
    key = make_key()
    (user,) = make_users()
    first = [game_event(user, f"a{i}") for i in range(PER_MINUTE)]
    assert len(record(events, key, *first).results) == PER_MINUTE
    with pytest.raises(grpc.RpcError) as refused:
        record(events, key, game_event(user, "one-more"))
    assert refused.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    trailers = dict(refused.value.trailing_metadata() or ())
    assert int(trailers["retry-after"]) >= 1
    assert stored_count() == PER_MINUTE


def test_a_database_that_does_not_answer_is_unavailable_not_internal(database: str) -> None:
    dead = f"postgresql+psycopg2://nobody@127.0.0.1:{support.free_port()}/questline"
    with (
        support.start_grpc_server(name="grpc-no-db", QUESTLINE_DATABASE_URL=dead) as server,
        grpc.insecure_channel(server.target) as ch,
    ):
        catalog = catalog_pb2_grpc.CatalogStub(ch)
        events = events_pb2_grpc.EventsStub(ch)
        for call in (
            lambda: catalog.GetQuest(catalog_pb2.GetQuestRequest(quest_id=1), timeout=30),
            lambda: catalog.ListQuests(catalog_pb2.ListQuestsRequest(), timeout=30),
            lambda: record(events, "qlk_any", game_event(1, "k")),
        ):
            code, details = code_of(call)
            assert code is grpc.StatusCode.UNAVAILABLE, details
            assert "retry" in details
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        assert [health_of(ch, s) for s in SERVICE_NAMES] == [not_serving, not_serving]
        assert health_of(ch, "") == health_pb2.HealthCheckResponse.SERVING


SERVICE_NAMES = ("questline.v1.Catalog", "questline.v1.Events")


def health_of(channel: grpc.Channel, service: str) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    return int(answer.status)


def test_without_a_database_the_services_are_not_serving_and_the_server_lives(
    database: str,
) -> None:
    """Readiness (a probe on a service) follows the database, that of the database
    and its schema; liveness (the server's own status) does not: a database outage
    must not get the server restarted."""
    name = f"{support.TEST_DB}_grpc_health"
    admin_engine = sa.create_engine(f"{support.PG_SERVER}/postgres", isolation_level="AUTOCOMMIT")
    url = f"{support.PG_SERVER}/{name}"

    def recreate(*, drop_only: bool = False) -> None:
        with admin_engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            if not drop_only:
                conn.execute(text(f"CREATE DATABASE {name}"))

    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING

    def wait_for(ch: grpc.Channel, status: int, why: str) -> None:
        support.wait_until(lambda: all(health_of(ch, s) == status for s in SERVICE_NAMES), 60, why)
        assert health_of(ch, "") == serving

    recreate()
    try:
        with (
            support.start_grpc_server(
                name="grpc-health",
                QUESTLINE_DATABASE_URL=url,
                QUESTLINE_GRPC_HEALTH_CHECK_SECONDS="0.2",
            ) as server,
            grpc.insecure_channel(server.target) as ch,
        ):
            wait_for(ch, not_serving, "the services to say NOT_SERVING without a schema")
            migrate.upgrade(url)
            wait_for(ch, serving, "the services to say SERVING once migrated")
            recreate(drop_only=True)
            wait_for(ch, not_serving, "the services to say NOT_SERVING without the database")
            assert server.alive()
            recreate()
            migrate.upgrade(url)
            wait_for(ch, serving, "the services to say SERVING once the database is back")
        assert "NOT_SERVING" in server.output()
    finally:
        recreate(drop_only=True)
        admin_engine.dispose()


def test_a_conflicting_key_is_aborted_not_internal() -> None:
    from questline.errors import Conflict
    from rpc.errors import CODES

    assert CODES[Conflict.status_code] is grpc.StatusCode.ABORTED


# --- graceful shutdown -------------------------------------------------------------


def test_sigterm_lets_a_call_in_flight_finish(database: str) -> None:
    key = make_key()
    (user,) = make_users()
    server = support.start_grpc_server(name="grpc-sigterm")
    try:
        with grpc.insecure_channel(server.target) as ch, db.transaction() as blocker:
            stub = events_pb2_grpc.EventsStub(ch)
            # An uncommitted event with the same idempotency key: the call's INSERT waits
            # to learn whether it commits.
            blocker.execute(
                text(
                    "INSERT INTO events (user_id, type, data, created_at, idempotency_key, "
                    "attempts) VALUES (:u, 'blocker', '{}', now(), 'in-flight', 0)"
                ),
                {"u": user},
            )
            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(record, stub, key, game_event(user, "in-flight"))
                support.wait_until(lambda: _waiting_on_a_lock(), 30, "the call to wait on the lock")
                server.kill(signal.SIGTERM)
                support.wait_until(
                    lambda: "shutting down" in server.output(), 30, "the server to see SIGTERM"
                )
                assert server.alive()
                assert not call.done()
                blocker.rollback()  # the key is free again; the call finishes
                answer = call.result(timeout=30)
        assert answer.results[0].status == events_pb2.EVENT_STATUS_ACCEPTED
        assert server.wait(30) == 0
        with db.transaction() as session:
            stored = select(Event.event_id).where(Event.idempotency_key == "in-flight")
            assert session.scalar(stored)
    finally:
        server.stop()


def _waiting_on_a_lock() -> bool:
    with db.transaction() as session:
        return bool(
            session.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND datname = current_database() AND pid <> pg_backend_pid() "
                    "AND (query ILIKE '%INSERT INTO events%' "
                    "OR query ILIKE 'EXECUTE questline_insert_events%')"
                )
            )
        )


# --- fuzzing RecordEvents -----------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
_attr_values = st.one_of(
    st.builds(events_pb2.AttrValue, string_value=_text),
    st.builds(events_pb2.AttrValue, int_value=st.integers(-(2**63), 2**63 - 1)),
    st.builds(events_pb2.AttrValue, number_value=st.floats()),
    st.builds(events_pb2.AttrValue, bool_value=st.booleans()),
    st.just(events_pb2.AttrValue()),  # no kind at all
)
_stamps = st.builds(
    Timestamp,
    seconds=st.one_of(
        st.integers(-(2**40), 2**40),
        st.integers(int(time.time()) - 200_000, int(time.time()) + 200),
    ),
    nanos=st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1)),
)


@st.composite
def _events(draw: st.DrawFn, users: list[int]) -> events_pb2.Event:
    message = events_pb2.Event(
        user_id=draw(st.one_of(st.sampled_from(users), st.integers(-(2**63), 2**63 - 1))),
        type=draw(st.one_of(st.from_regex(r"[a-z0-9_.:-]{1,64}", fullmatch=True), _text)),
        idempotency_key=draw(st.one_of(st.uuids().map(str), _text)),
    )
    if draw(st.booleans()):
        message.value = draw(st.floats())
    for name, value in draw(st.dictionaries(_text, _attr_values, max_size=18)).items():
        message.attrs[name].CopyFrom(value)
    if draw(st.booleans()):
        message.occurred_at.CopyFrom(draw(_stamps))
    return message


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_fuzzed_batches_never_fail_inside_and_store_nothing_when_refused(
    events: events_pb2_grpc.EventsStub, fuzz_key: tuple[str, list[int]], data: st.DataObject
) -> None:
    key, users = fuzz_key
    batch = data.draw(st.lists(_events(users), min_size=0, max_size=4))
    before = stored_count()
    code, details = code_of(lambda: record(events, key, *batch))
    assert code in (
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ), details
    if code is not grpc.StatusCode.OK:
        assert stored_count() == before, details
        if code is grpc.StatusCode.INVALID_ARGUMENT:
            assert details.startswith("events"), details


@pytest.fixture
def fuzz_key() -> tuple[str, list[int]]:
    return make_key(["events:write", "events:backfill"]), make_users(3)


# --- the README's grpcurl lines ---------------------------------------------------------


def _readme_calls() -> list[list[str]]:
    import shlex

    text = (support.ROOT / "README.md").read_text()
    return [
        shlex.split(line.split("#")[0] if " # " in line else line)
        for line in text.splitlines()
        if line.startswith("grpcurl ")
    ]


def test_every_grpcurl_line_of_the_readme_works(channel: grpc.Channel) -> None:
    """Each line's method exists (found as reflection finds it), its -d body is the JSON
    of the method's request, and the call succeeds against the real server."""
    from google.protobuf import descriptor_pool, json_format, message_factory

    calls = _readme_calls()
    methods = set()
    key = make_key()
    (user,) = make_users()
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    for argv in calls:
        args = argv[1:]
        assert args[0] == "-plaintext", argv
        if args[2] in ("list", "describe"):
            symbol = args[3] if args[2] == "describe" else ""
            request = reflection_pb2.ServerReflectionRequest(
                **({"file_containing_symbol": symbol} if symbol else {"list_services": ""})
            )
            (answer,) = reflection.ServerReflectionInfo(iter([request]), timeout=10)
            assert not answer.HasField("error_response"), argv
            continue
        headers = dict(args[i + 1].split(": ", 1) for i, a in enumerate(args) if a == "-H")
        body = args[args.index("-d") + 1] if "-d" in args else "{}"
        path = args[-1]
        service_name, method_name = path.split("/")
        service = descriptor_pool.Default().FindServiceByName(service_name)
        method = service.FindMethodByName(method_name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        request = json_format.Parse(body, request_class())
        if method_name == "RecordEvents":
            assert headers["x-api-key"] == "qlk_..."
            headers["x-api-key"] = key
            for event in request.events:
                assert event.user_id == 1
                event.user_id = user
                event.occurred_at.CopyFrom(wire.timestamp(datetime.now(UTC)))
        metadata = tuple(headers.items())
        if method.server_streaming:
            stream = channel.unary_stream(
                f"/{path}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request, metadata=metadata, timeout=10)
            assert next(stream).ByteSize() > 0
            stream.cancel()
        else:
            answer = channel.unary_unary(
                f"/{path}",
                request_serializer=request_class.SerializeToString,
                response_deserializer=response_class.FromString,
            )(request, metadata=metadata, timeout=10)
            assert answer.ByteSize() > 0, path
        methods.add(path)
    assert methods == {
        "grpc.health.v1.Health/Check",
        "questline.v1.Catalog/GetQuest",
        "questline.v1.Catalog/ListQuests",
        "questline.v1.Catalog/WatchCatalog",
        "questline.v1.Events/RecordEvents",
    }
    assert stored_count() == 1
