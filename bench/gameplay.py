"""The engine's rows: (f) ingestion over HTTP against a raw psycopg2 loop, and (g) the
backlog drain of gameplay events against 20 quests of mixed shapes against the sign-in
drain, each pair measured back to back in the same run, each with an exactness check."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg2
from psycopg2.extras import execute_values

import harness
from bench.load import Connection
from bench.system import Bench, wait_worker_ready

BATCH = 100
START = datetime(2026, 3, 3, tzinfo=UTC)  # the days around New York's spring forward
ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]

# --- (f) ingestion -----------------------------------------------------------------


def _ingestion_event(i: int, n_users: int) -> dict[str, Any]:
    kind = "play" if i % 3 else "score"
    attrs: dict[str, Any] = {"mode": "ranked"} if kind == "play" and i % 2 else {}
    if kind == "score":
        attrs["level"] = i % 10
    return {
        "user_id": 1 + i % n_users,
        "type": kind,
        "idempotency_key": f"e-{i}",
        "value": (i % 25) + 0.5 if kind == "score" else 1,
        "attrs": attrs,
        "occurred_at": (START + timedelta(seconds=i)).isoformat(),
    }


def ingestion_batches(n_batches: int, n_users: int) -> list[list[dict[str, Any]]]:
    return [
        [_ingestion_event(b * BATCH + j, n_users) for j in range(BATCH)] for b in range(n_batches)
    ]


def _make_key(b: Bench) -> tuple[str, int]:
    from questline.credentials import service as credentials
    from questline.infra import db

    with db.transaction() as session:
        new = credentials.create(session, name="bench", scopes=["events:write", "events:backfill"])
        return new.api_key, new.key.key_id


def _raw_loop(
    dsn: str, batches: list[list[dict[str, Any]]], key_id: int, seconds: float, out: Any
) -> None:
    """Store its share of the batches: one multi-row INSERT and COMMIT per batch."""
    del seconds  # a fixed amount of work, timed by the caller's clock
    conn = psycopg2.connect(dsn)
    cur = conn.cursor()
    t0 = time.perf_counter()  # the child's own clock: process start-up is not counted
    for batch in batches:
        execute_values(
            cur,
            "INSERT INTO events (user_id, type, data, created_at, occurred_at, tz, value, "
            "attrs, idempotency_key, api_key_id, attempts) VALUES %s",
            [
                (
                    e["user_id"],
                    e["type"],
                    "{}",
                    e["occurred_at"],
                    "UTC",  # the user's zone, as ingestion stores it
                    e["value"],
                    json.dumps(e["attrs"]),
                    e["idempotency_key"],
                    key_id,
                )
                for e in batch
            ],
            template="(%s, %s, %s, now(), %s, %s, %s, %s, %s, %s, 0)",
            page_size=BATCH,
        )
        conn.commit()
    elapsed = time.perf_counter() - t0
    conn.close()
    out.put((len(batches) * BATCH, elapsed))


def _stored_exactly(b: Bench, sent: int) -> str:
    total, distinct = b.sql(
        "SELECT count(*), count(DISTINCT (user_id, idempotency_key)) FROM events "
        "WHERE idempotency_key IS NOT NULL"
    )[0]
    if total != sent or distinct != sent:
        return f"{total} stored ({distinct} distinct) of {sent} sent"
    return ""


def _raw_rate(b: Bench, batches: list[list[dict[str, Any]]], key_id: int) -> float:
    shares = [batches[i :: b.processes] for i in range(b.processes)]
    import multiprocessing as mp

    # Fresh processes, not forks: forked after parts (c)-(e) had run in this process,
    # the raw loop ran 5-25x slower, and the HTTP side did not.
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_raw_loop, args=(b.dsn, s, key_id, 0.0, out)) for s in shares]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    # The processes run side by side: the slowest one's time is the run's.
    return int(sum(n for n, _ in results)) / max(float(t) for _, t in results)


async def _post_batches(
    port: int, key: str, batches: list[list[dict[str, Any]]], connections: int
) -> tuple[float, int]:
    """Closed loop: each connection posts its next batch once the last one answered."""
    headers = f"X-API-Key: {key}\r\n"
    bodies = [json.dumps({"events": batch}).encode() for batch in batches]
    todo: Iterator[bytes] = iter(bodies)
    failed = 0

    async def run() -> None:
        nonlocal failed
        conn = await Connection.open(port)
        for body in todo:
            status, payload = await conn.request("POST", "/events", body, headers)
            if status != 202:
                failed += 1
                if failed <= 3:
                    print(f"  POST /events {status}: {payload[:200]!r}", flush=True)
        conn.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(run() for _ in range(connections)))
    return sum(len(x) for x in batches) / (time.perf_counter() - t0), failed


def measure_ingestion(b: Bench, n_batches: int, connections: int) -> dict[str, Any]:
    """Events/s stored by POST /events (b.processes uvicorn processes) and by the raw
    loop (b.processes processes), the same batches into the same table."""
    n_users = 1000
    b.reset()
    b.make_users(n_users)
    key, key_id = _make_key(b)
    batches = ingestion_batches(n_batches, n_users)
    sent = n_batches * BATCH

    # The raw loop runs before and after the HTTP run and the faster counts: a stall of
    # the shared machine during one short raw run must not flatter the ratio.
    b.sql("DELETE FROM events")
    raw_before = _raw_rate(b, batches, key_id)
    raw_problem = _stored_exactly(b, sent)

    b.sql("DELETE FROM events")
    from questline import security
    from questline.config import get_settings

    security.ensure_keypair(get_settings())  # the service checks a public key at start
    api = b.api("api.processing.main:app", b.processes)
    with api:
        http, failed = asyncio.run(_post_batches(api.port, key, batches, connections))
    http_problem = _stored_exactly(b, sent) or (f"{failed} batches refused" if failed else "")
    b.sql("DELETE FROM events")
    raw_after = _raw_rate(b, batches, key_id)
    raw_problem = raw_problem or _stored_exactly(b, sent)
    return {
        "http": http,
        "raw": max(raw_before, raw_after),
        "raw_runs": [raw_before, raw_after],
        "connections": connections,
        "events": sent,
        "problem": "; ".join(p for p in (http_problem, raw_problem and "raw: " + raw_problem) if p),
    }


# --- (g) gameplay backlog drain ------------------------------------------------------

# 20 quests of mixed shapes on two event types: "play" (attr mode) and "score" (value,
# attr level). Caps make the outcome depend on order: each user's events are stored
# contiguously in time order and users in blocks of one drain batch (see below).
QUESTS: list[dict[str, Any]] = [
    # counts with where, daily periods in several zones
    {
        "target": 2,
        "trigger": {"event": "play", "where": {"mode": "ranked"}},
        "period": "day",
        "max_per_period": None,
        "auto_claim": True,
        "rewards": [{"item": "gold", "qty": 3}],
    },
    {
        "target": 2,
        "trigger": {"event": "play"},
        "period": "day",
        "timezone": "UTC",
        "max_per_period": 1,
        "auto_claim": True,
        "rewards": [{"item": "gold", "qty": 3}],
    },
    {
        "target": 3,
        "trigger": {"event": "play"},
        "period": "day",
        "timezone": "Asia/Kathmandu",
        "reset_at": "04:00",
        "max_per_period": 1,
        "auto_claim": True,
        "rewards": [{"item": "gold", "qty": 5}, {"item": "chest", "qty": 1}],
    },
    {
        "target": 1,
        "trigger": {"event": "play"},
        "period": "day",
        "timezone": "America/New_York",
        "max_per_period": 1,
        "rewards": [{"item": "gem", "qty": 1}],
    },
    {
        "target": 2,
        "trigger": {"event": "score", "where": {"level": {"gte": 5}}},
        "period": "day",
        "timezone": "Australia/Lord_Howe",
        "max_per_period": 2,
        "auto_claim": True,
        "rewards": [{"item": "coins", "qty": 2}],
    },
    {
        "target": 3,
        "trigger": {"event": "score", "where": {"level": {"gte": 5}}},
        "period": "week",
        "timezone": "Asia/Kathmandu",
        "reset_at": "04:00",
        "max_per_period": None,
        "auto_claim": True,
        "rewards": [{"item": "coins", "qty": 7}],
    },
    {
        "target": 5,
        "trigger": {"event": "play", "where": {"mode": "casual"}},
        "rewards": [{"item": "gold", "qty": 1}],
    },
    {
        "target": 4,
        "trigger": {"event": "play"},
        "duplication": 2,
        "auto_claim": True,
        "rewards": [{"item": "gold", "qty": 2}],
    },
    # sums with carry and caps
    {
        "target": 10,
        "trigger": {"event": "score"},
        "measure": "sum",
        "rewards": [{"item": "diamond", "qty": 1}],
    },
    {
        "target": 10,
        "trigger": {"event": "score"},
        "measure": "sum",
        "duplication": 3,
        "auto_claim": True,
        "rewards": [{"item": "diamond", "qty": 1}],
    },
    {
        "target": 4,
        "trigger": {"event": "score"},
        "measure": "sum",
        "period": "week",
        "max_per_period": 2,
        "duplication": 5,
        "auto_claim": True,
        "rewards": [{"item": "coins", "qty": 7}, {"item": "gold", "qty": 1}],
    },
    {
        "target": 25,
        "trigger": {"event": "score", "where": {"level": {"lte": 4}}},
        "measure": "sum",
        "period": "day",
        "max_per_period": 1,
        "auto_claim": True,
        "rewards": [{"item": "gold", "qty": 4}],
    },
    {
        "target": 50,
        "trigger": {"event": "score"},
        "measure": "sum",
        "period": "day",
        "timezone": "America/New_York",
        "max_per_period": None,
        "auto_claim": True,
        "rewards": [{"item": "gem", "qty": 1}, {"item": "coins", "qty": 3}],
    },
    # consecutive periods
    {
        "target": 2,
        "trigger": {"event": "play"},
        "measure": "consecutive",
        "period": "day",
        "grace_periods": 1,
        "auto_claim": True,
        "rewards": [{"item": "gem", "qty": 1}, {"item": "gold", "qty": 1}],
    },
    {
        "target": 2,
        "trigger": {"event": "play"},
        "measure": "consecutive",
        "period": "day",
        "duplication": 2,
        "auto_claim": True,
        "rewards": [{"item": "gem", "qty": 2}],
    },
    {
        "target": 3,
        "trigger": {"event": "score"},
        "measure": "consecutive",
        "period": "day",
        "timezone": "Asia/Kathmandu",
        "reset_at": "04:00",
        "rewards": [{"item": "chest", "qty": 1}],
    },
    # bundles, claimed by hand or at once
    {
        "target": 3,
        "trigger": {"event": "play", "where": {"mode": "ranked"}},
        "period": "week",
        "timezone": "UTC",
        "max_per_period": 1,
        "claim_within_seconds": 3600,
        "rewards": [
            {"item": "gold", "qty": 10},
            {"item": "gem", "qty": 2},
            {"item": "chest", "qty": 1},
        ],
    },
    {
        "target": 6,
        "trigger": {"event": "play"},
        "auto_claim": True,
        "rewards": [
            {"item": "gold", "qty": 1},
            {"item": "gem", "qty": 1},
            {"item": "coins", "qty": 1},
            {"item": "chest", "qty": 1},
        ],
    },
    {
        "target": 2,
        "trigger": {"event": "score", "where": {"level": {"gte": 8}}},
        "auto_claim": True,
        "rewards": [{"item": "diamond", "qty": 2}, {"item": "gold", "qty": 2}],
    },
    {
        "target": 30,
        "trigger": {"event": "score"},
        "measure": "sum",
        "duplication": 1,
        "auto_claim": True,
        "rewards": [{"item": "chest", "qty": 3}],
    },
]
EVENT_TYPES = {"play", "score"}
PER_USER = 10  # a drain batch (200) holds whole users: the fold's order is the drain's


def create_quests(b: Bench) -> list[Any]:
    """Store QUESTS (active, after the seed quest) and parse the same specs with the
    engine; the seed quest is made inactive for the run and made active again after."""
    from sqlalchemy import update

    from models import Quest, Reward
    from models.catalog import CatalogState
    from questline.engine import parse_quest
    from questline.infra import db

    defs = []
    with db.transaction() as s:
        for n, spec in enumerate(QUESTS):
            items = spec["rewards"]
            reward = Reward(
                reward_name=f"bench {n}",
                reward_item=items[0]["item"],
                reward_qty=items[0]["qty"],
                items=items,
            )
            s.add(reward)
            s.flush()
            columns = {k: v for k, v in spec.items() if k not in {"target", "trigger", "rewards"}}
            columns.setdefault("duplication", None)
            columns.setdefault("requires", [])
            quest = Quest(
                name=f"bench-{n}",
                reward_id=reward.reward_id,
                streak=spec["target"],
                trigger=dict(spec["trigger"]),
                **columns,
            )
            s.add(quest)
            s.flush()
            defs.append(parse_quest({**spec, "quest_id": quest.quest_id}))
        s.execute(update(CatalogState).values(version=CatalogState.version + 1))
    return defs


def drop_quests(b: Bench, defs: list[Any]) -> None:
    ids = [d.quest_id for d in defs]
    b.reset()
    b.sql("DELETE FROM quests WHERE quest_id = ANY(%s)", (ids,))
    b.sql("DELETE FROM rewards WHERE reward_name LIKE 'bench %%'")
    b.sql("UPDATE catalog_state SET version = version + 1")


def insert_gameplay_backlog(b: Bench, n_events: int) -> int:
    """n_events gameplay events, PER_USER per user, each user's in time order over ten
    days (so periods roll over), in a zone of ZONES."""
    n_users = n_events // PER_USER
    rows = []
    for u in range(n_users):
        for j in range(PER_USER):
            i = u * PER_USER + j
            kind = "play" if (i * 7) % 3 else "score"
            attrs: dict[str, Any] = {}
            if kind == "play":
                attrs["mode"] = ["ranked", "casual", "arcade"][(i * 5) % 3]
            else:
                attrs["level"] = (i * 3) % 10
            value = Decimal((i * 13) % 2500) / 100 if kind == "score" else Decimal(1)
            at = START + timedelta(hours=j * 22 + (u % 7), minutes=(i * 17) % 60)
            rows.append(
                (1 + u, kind, at, ZONES[u % len(ZONES)], value, json.dumps(attrs), f"g-{i}")
            )
    with b.connect() as conn, conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO events (user_id, type, data, created_at, occurred_at, tz, value, "
            "attrs, idempotency_key, attempts) VALUES %s",
            rows,
            template="(%s, %s, '{}', now(), %s, %s, %s, %s, %s, 0)",
            page_size=1000,
        )
    conn.close()
    return n_users


def check_against_fold(b: Bench, defs: list[Any], sent: int) -> str:
    """'' if every input was processed once and every user's stored state, rewards,
    history and wallet equal engine.fold of the same events."""
    from sqlalchemy import func, select

    from models import Event, QuestPeriodProgress, UserQuestProgress, UserReward
    from questline.engine import (
        PeriodState,
        QuestProgressed,
        QuestState,
        fold,
    )
    from questline.infra import db
    from questline.quests.rules import event_in

    total, pending = b.sql(
        "SELECT count(*), count(*) FILTER (WHERE processed_at IS NULL) FROM events "
        "WHERE occurred_at IS NOT NULL"
    )[0]
    problems = []
    if total != sent:
        problems.append(f"{total} inputs stored, {sent} sent")
    if pending:
        problems.append(f"{pending} inputs not processed")
    by_id = {d.quest_id: d for d in defs}
    with db.transaction() as s:
        inputs: dict[int, list[Any]] = defaultdict(list)
        for row in s.execute(
            select(
                Event.event_id,
                Event.user_id,
                Event.type,
                Event.occurred_at,
                Event.tz,
                Event.value,
                Event.attrs,
                Event.created_at,
                Event.processed_at,
            )
            .where(Event.occurred_at.is_not(None), Event.processed_at.is_not(None))
            # The order they were applied in: batch by batch (processed_at is the
            # batch's clock), event_id order within a batch.
            .order_by(Event.processed_at, Event.event_id)
        ):
            inputs[row.user_id].append(row)
        lifetime = {(r.user_id, r.quest_id): r for r in s.scalars(select(UserQuestProgress))}
        periods: dict[tuple[int, int], dict[str, PeriodState]] = defaultdict(dict)
        for p in s.scalars(select(QuestPeriodProgress)):
            periods[(p.user_id, p.quest_id)][p.period_key] = PeriodState(p.progress, p.completions)
        rewards = Counter((r.user_id, r.quest_id) for r in s.scalars(select(UserReward)))
        history = Counter(
            (user, quest, kind)
            for user, quest, kind, n in s.execute(
                select(Event.user_id, Event.quest_id, Event.type, func.count())
                .where(Event.quest_id.is_not(None))
                .group_by(Event.user_id, Event.quest_id, Event.type)
            )
            for _ in range(n)
        )
        wallets = {(u, i): bal for u, i, bal in b.sql("SELECT user_id, item, balance FROM wallets")}
    wrong_users = reordered_users = 0
    expected_wallets: Counter[tuple[int, str]] = Counter()
    for user, rows in inputs.items():
        stored: dict[int, QuestState] = {}
        for quest_id in by_id:
            kept = lifetime.get((user, quest_id))
            stored[quest_id] = QuestState(
                completions=kept.completions if kept else 0,
                best_streak=kept.best_streak if kept else 0,
                streak_periods=tuple(kept.streak_periods) if kept else (),
                streak_completions=kept.streak_completions if kept else 0,
                periods=periods.get((user, quest_id), {}),
            )

        def folds_to_stored(
            batches: Iterable[list[Any]], user: int = user, stored: dict[int, QuestState] = stored
        ) -> bool:
            # Batch after batch, each from the state the one before left: fold orders
            # the events it is given by time, and a drain sees only its batch's.
            states: dict[int, QuestState] = {}
            effects: list[Any] = []
            for batch in batches:
                states, more = fold(defs, states, [event_in(r) for r in batch])
                effects += more
            kinds = Counter(e.quest_id for e in effects if isinstance(e, QuestProgressed))
            return all(
                states.get(q, QuestState()) == stored[q]
                and history[(user, q, "quest_progress")] == kinds[q]
                for q in by_id
            )

        # Two drains may lock parts of one user's events at once (their SKIP LOCKED
        # scans race), and their clocks need not follow the order in which they took
        # the user's progress locks: then the stored state must be the fold of the
        # batches in some order (with caps, the order matters).
        batches: dict[Any, list[Any]] = defaultdict(list)
        for r in rows:
            batches[r.processed_at].append(r)
        exact = folds_to_stored(batches.values())
        if not exact and 1 < len(batches) <= 4:
            exact = any(
                folds_to_stored(order) for order in itertools.permutations(batches.values())
            )
            reordered_users += exact
        bad = not exact
        for quest_id, quest in by_id.items():
            got = stored[quest_id]
            over_cap = (quest.duplication is not None and got.completions > quest.duplication) or (
                quest.max_per_period is not None
                and quest.measure.value != "consecutive"
                and any(p.completions > quest.max_per_period for p in got.periods.values())
            )
            if (
                over_cap
                or rewards[(user, quest_id)] != got.completions
                or history[(user, quest_id, "quest_completed")] != got.completions
            ):
                bad = True
            if quest.auto_claim:
                for item in quest.rewards:
                    expected_wallets[(user, item.item)] += item.qty * got.completions
        wrong_users += bad
    if reordered_users:
        print(
            f"  {reordered_users} users' events were split across concurrent batches that "
            "applied in another order than their clocks: each equals the fold of its "
            "batches in the order they applied",
            flush=True,
        )
    held = {k: v for k, v in wallets.items() if v}
    if held != {k: v for k, v in expected_wallets.items() if v}:
        problems.append("wallets differ from the claimed bundles")
    if wrong_users:
        problems.append(f"{wrong_users} users differ from engine.fold")
    return "; ".join(problems)


def drain(b: Bench, workers: int, events: int) -> float:
    """Inputs/s for `workers` worker processes draining `events` pending inputs, as in (c)."""
    from workers.celery_app import app as questline_app
    from workers.tasks import drain_outbox

    child = b.celery_worker("workers", workers, QUESTLINE_SWEEPER_ENABLED="false")
    with child:
        wait_worker_ready(questline_app, child)
        t0 = time.perf_counter()
        for _ in range(workers):
            drain_outbox.apply_async()
        harness.wait_until(lambda: pending_inputs(b) == 0, 900, "the backlog to drain")
        elapsed = time.perf_counter() - t0
    return events / elapsed


def pending_inputs(b: Bench) -> int:
    try:
        return int(
            b.sql(
                "SELECT count(*) FROM events WHERE occurred_at IS NOT NULL AND processed_at IS NULL"
            )[0][0]
        )
    except psycopg2.OperationalError:
        return -1


def measure_gameplay_drain(b: Bench, events: int, workers: int) -> dict[str, Any]:
    """The sign-in drain with the seed quest, then the gameplay drain with QUESTS only,
    back to back with the same worker setup."""
    events -= events % (PER_USER * 20)
    n_users = max(1, events // 5)
    b.reset()
    b.make_users(n_users)
    b.insert_backlog(events, n_users)
    sign_ins = drain(b, workers, events)
    sign_in_problem = b.check_exact(events)

    b.sql("UPDATE quests SET active = false WHERE quest_id = 1")
    defs = create_quests(b)
    try:
        b.reset()
        b.make_users(events // PER_USER)
        insert_gameplay_backlog(b, events)
        gameplay = drain(b, workers, events)
        problem = check_against_fold(b, defs, events)
        history = b.sql("SELECT count(*) FROM events WHERE occurred_at IS NULL")[0][0]
    finally:
        drop_quests(b, defs)
        b.sql("UPDATE quests SET active = true WHERE quest_id = 1")
        b.sql("UPDATE catalog_state SET version = version + 1")
    return {
        "sign_ins": sign_ins,
        "gameplay": gameplay,
        "workers": workers,
        "events": events,
        "history_per_event": history / events,
        "problem": "; ".join(
            p for p in (problem, sign_in_problem and "sign-ins: " + sign_in_problem) if p
        ),
    }
