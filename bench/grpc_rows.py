"""(h) The gRPC rows: RecordEvents against POST /events with the same batches, and the
gameplay drain with the gRPC catalog source against the database source.

Same number of server processes on each side (b.processes uvicorn workers; as many
`questline grpc` processes, the client spreading its calls over them), the same number of
concurrent clients in one load process, and every run checked: every event stored once;
every drained state equal to engine.fold (bench/gameplay.check_against_fold).
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import datetime
from typing import Any

import grpc

import harness
from bench.gameplay import (
    PER_USER,
    _make_key,
    _post_batches,
    _stored_exactly,
    check_against_fold,
    create_quests,
    drop_quests,
    ingestion_batches,
    insert_gameplay_backlog,
)
from bench.system import Bench

DRAIN_BATCH = 200  # a worker's batch (QUESTLINE_BATCH_SIZE's default)


def _request(batch: list[dict[str, Any]]) -> Any:
    from questline.catalog import wire
    from questline.grpc_gen.v1 import events_pb2

    events = []
    for e in batch:
        message = events_pb2.Event(
            user_id=e["user_id"], type=e["type"], idempotency_key=e["idempotency_key"]
        )
        message.value = float(e["value"])
        for name, value in e["attrs"].items():
            if isinstance(value, str):
                message.attrs[name].string_value = value
            else:
                message.attrs[name].int_value = value
        message.occurred_at.CopyFrom(wire.timestamp(datetime.fromisoformat(e["occurred_at"])))
        events.append(message)
    return events_pb2.RecordEventsRequest(events=events)


def _record_batches(
    targets: list[str], key: str, requests: list[Any], connections: int
) -> tuple[float, int]:
    """Closed loop: `connections` callers, each sends its next batch once the last one
    answered, over one channel per server process. The requests are encoded beforehand,
    as the HTTP side's JSON bodies are: the load generator's own encoding is not timed."""
    from questline.grpc_gen.v1 import events_pb2

    channels = [grpc.insecure_channel(t) for t in targets]
    stubs = [
        c.unary_unary(
            "/questline.v1.Events/RecordEvents",
            request_serializer=None,  # bytes as they are
            response_deserializer=events_pb2.RecordEventsResponse.FromString,
        )
        for c in channels
    ]
    sent = sum(len(r.events) for r in requests)
    todo = iter([r.SerializeToString() for r in requests])
    lock = threading.Lock()
    failed = 0
    metadata = (("x-api-key", key),)

    def run(n: int) -> None:
        nonlocal failed
        stub = stubs[n % len(stubs)]
        while True:
            with lock:
                request = next(todo, None)
            if request is None:
                return
            try:
                stub(request, metadata=metadata, timeout=60)
            except grpc.RpcError as exc:
                with lock:
                    failed += 1
                    if failed <= 3:
                        print(f"  RecordEvents {exc.code()}: {exc.details()}", flush=True)

    for channel in channels:  # connect first: channel set-up is not the server's speed
        grpc.channel_ready_future(channel).result(timeout=30)
    callers = [threading.Thread(target=run, args=(n,)) for n in range(connections)]
    t0 = time.perf_counter()
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    elapsed = time.perf_counter() - t0
    for channel in channels:
        channel.close()
    return sent / elapsed, failed


def _grpc_servers(b: Bench, n: int) -> list[harness.GrpcServer]:
    servers: list[harness.GrpcServer] = []
    try:
        for _ in range(n):
            servers.append(harness.start_grpc_server(b.child_env(), b.data_dir, name="grpc"))
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return servers


def measure_grpc_ingestion(b: Bench, n_batches: int, connections: int) -> dict[str, Any]:
    """Events/s stored by RecordEvents and by POST /events, the same batches of 100, in
    three rounds of HTTP then gRPC: the faster run of each side counts (a stall of the
    shared machine must not decide the ratio), and each round's own ratio is kept."""
    n_users = 1000
    b.reset()
    b.make_users(n_users)
    key, _key_id = _make_key(b)
    batches = ingestion_batches(n_batches, n_users)
    requests = [_request(batch) for batch in batches]
    sent = n_batches * len(batches[0])
    from questline import security
    from questline.config import get_settings

    security.ensure_keypair(get_settings())
    http_runs: list[float] = []
    grpc_runs: list[float] = []
    problems: list[str] = []
    api = b.api("api.processing.main:app", b.processes)
    servers = _grpc_servers(b, b.processes)
    try:
        for _ in range(3):
            b.sql("DELETE FROM events")
            with_http, failed = asyncio.run(_post_batches(api.port, key, batches, connections))
            http_runs.append(with_http)
            refused = f"HTTP: {failed} refused" if failed else ""
            problems.append(_stored_exactly(b, sent) or refused)
            b.sql("DELETE FROM events")
            targets = [s.target for s in servers]
            with_grpc, failed = _record_batches(targets, key, requests, connections)
            grpc_runs.append(with_grpc)
            refused = f"gRPC: {failed} refused" if failed else ""
            problems.append(_stored_exactly(b, sent) or refused)
    finally:
        api.stop()
        for server in servers:
            server.stop()
    b.sql("DELETE FROM events")
    return {
        "http": max(http_runs),
        "grpc": max(grpc_runs),
        "http_runs": http_runs,
        "grpc_runs": grpc_runs,
        "round_ratios": sorted(g / h for g, h in zip(grpc_runs, http_runs, strict=True)),
        "connections": connections,
        "events": sent,
        "problem": "; ".join(p for p in problems if p),
    }


def measure_grpc_source_drain(b: Bench, events: int) -> dict[str, Any]:
    """The gameplay drain's cost per event (20 quests, batches of 200, in this process)
    with the database catalog source and with the gRPC one, batch by batch in turn over
    one backlog, so that the shared machine's ups and downs fall on both alike."""
    from questline.catalog.grpc_source import GrpcCatalog
    from questline.catalog.source import CatalogSource, DatabaseCatalog
    from questline.infra import db
    from questline.quests.rules import apply_inputs

    events -= events % (PER_USER * 20)
    b.sql("UPDATE quests SET active = false WHERE quest_id = 1")
    defs = create_quests(b)
    (server,) = _grpc_servers(b, 1)
    over_grpc = GrpcCatalog(server.target, timeout=10)
    sources: list[tuple[str, CatalogSource]] = [
        ("database", DatabaseCatalog()),
        ("grpc", over_grpc),
    ]
    seconds = {"database": 0.0, "grpc": 0.0}
    applied = {"database": 0, "grpc": 0}
    try:
        b.reset()
        b.make_users(events // PER_USER)
        insert_gameplay_backlog(b, events)
        for _, source in sources:  # both copies loaded before the clock starts
            with db.transaction() as session:
                source.current(session)
        turn = 0
        while True:
            name, source = sources[turn % 2]
            t0 = time.perf_counter()
            with db.transaction() as session:
                done = apply_inputs(session, limit=DRAIN_BATCH, catalog=source)
            elapsed = time.perf_counter() - t0
            if not done.inputs:
                break
            seconds[name] += elapsed
            applied[name] += len(done.inputs)
            turn += 1
        problem = check_against_fold(b, defs, events)
        refreshes = _calls(server, "ListQuests")
    finally:
        over_grpc.close()
        server.stop()
        drop_quests(b, defs)
        b.sql("UPDATE quests SET active = true WHERE quest_id = 1")
        b.sql("UPDATE catalog_state SET version = version + 1")
    cost = {name: seconds[name] / applied[name] for name in seconds}
    return {
        "database": 1 / cost["database"],
        "grpc": 1 / cost["grpc"],
        "cost_us": {name: c * 1e6 for name, c in cost.items()},
        "events": events,
        "overhead": cost["grpc"] / cost["database"] - 1,
        "list_quests_calls": refreshes,
        "problem": problem,
    }


def _calls(server: harness.GrpcServer, method: str) -> int:
    import httpx

    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("questline_grpc_calls_total{") and f"/{method}\"" in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)
