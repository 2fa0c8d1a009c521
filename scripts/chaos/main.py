"""The run: its own Redis and database, three workers in restart loops and the API,
the load and the nemesis together, then the drain, the checks and the summary."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import harness

from . import __doc__ as ABOUT
from . import log, webhooks
from .brokers import ChaosBroker, check_quorum_queues, make_broker
from .checks import Verdict, verify
from .events import (
    EventTally,
    event_targets,
    run_game_server,
    setup_event_quests,
    setup_zones,
)
from .expect import verify_events
from .load import (
    PASSWORD,
    Player,
    Tally,
    run_claimers,
    run_players,
    run_republisher,
    setup_catalog,
    setup_players,
)
from .nemesis import Faults, WorkerSlot, run_nemesis
from .probe import probe_counts

PG_SERVER = os.environ.get("QUESTLINE_CHAOS_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DATABASE = os.environ.get("QUESTLINE_CHAOS_DB_NAME", "questline_chaos")
SCRIPTS = Path(__file__).resolve().parent.parent  # where the workers find chaos.probe


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(ABOUT or "").split("\n\n")[0])
    parser.add_argument("--users", type=int, help="default 100 (control: 40)")
    parser.add_argument("--sign-ins", type=int, help="default 10000 (control: 3000)")
    parser.add_argument(
        "--events", type=int, help="gameplay events to send (default 5000, control 1500)"
    )
    parser.add_argument(
        "--duration", type=float, help="target load time, s (default 60, control 40)"
    )
    parser.add_argument("--negative-control", action="store_true", help="disable the safeguards")
    parser.add_argument("--expect-failure", action="store_true", help="exit 0 only if checks fail")
    parser.add_argument("--no-pg-restart", action="store_true")
    parser.add_argument("--dispatch", choices=["batch", "per_event"], default="batch")
    parser.add_argument(
        "--broker",
        choices=["redis", "rabbitmq"],
        default="redis",
        help="the broker to kill and restart: the run's Redis (default), or a RabbitMQ node "
        "of the run's own (Redis then stays up as the cache)",
    )
    parser.add_argument(
        "--database",
        default=DATABASE,
        help="the database to drop and create on the local server (default "
        "$QUESTLINE_CHAOS_DB_NAME or questline_chaos; never a questline_test* one)",
    )
    parser.add_argument("--drain-timeout", type=float, help="s (default 150, control 40)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    args = parser.parse_args(argv)
    harness.scratch_database(args.database)
    # The control only has to show that the checks see faults: a lighter load will do.
    control = args.negative_control
    for name, full, light in [
        ("users", 100, 40),
        ("sign_ins", 10_000, 3_000),
        ("events", 5_000, 1_500),
        ("duration", 60.0, 40.0),
        ("drain_timeout", 150.0, 40.0),
    ]:
        if getattr(args, name) is None:
            setattr(args, name, light if control else full)
    return args


def run_environment(
    args: argparse.Namespace,
    workdir: Path,
    redis_url: str,
    database_url: str,
    probe: Path,
    broker: ChaosBroker,
) -> dict[str, str]:
    """What the workers and the API read."""
    settings = {
        **broker.env(),
        "QUESTLINE_DATABASE_URL": database_url,
        "QUESTLINE_REDIS_URL": redis_url,
        "QUESTLINE_DATA_DIR": str(workdir),
        "QUESTLINE_SWEEP_AFTER_SECONDS": "2",
        "QUESTLINE_SWEEP_INTERVAL_SECONDS": "1",
        "QUESTLINE_BROKER_VISIBILITY_TIMEOUT_SECONDS": "45",
        "QUESTLINE_SIGN_IN_DISPATCH": args.dispatch,
        # Every player signs up and signs in from this one address, fast: the auth
        # limits are not under test here.
        "QUESTLINE_LOGIN_MAX_FAILURES_PER_CLIENT": "1000000",
        "QUESTLINE_SIGNUPS_PER_CLIENT_PER_HOUR": "1000000",
        "QUESTLINE_SIGN_INS_PER_USER_PER_MINUTE": "1000000",
        "QUESTLINE_EVENTS_PER_USER_PER_MINUTE": "1000000",
        # Password hashing is not under test here; keep its CPU for the faults.
        "QUESTLINE_ARGON2_MEMORY_KIB": "1024",
        "QUESTLINE_ARGON2_TIME_COST": "1",
        "QUESTLINE_CHAOS_PROBE": str(probe),
        **webhooks.SETTINGS,
    }
    if args.negative_control:
        settings["QUESTLINE_UNSAFE_DISABLE_IDEMPOTENCY_GUARD"] = "true"
        settings["QUESTLINE_SWEEPER_ENABLED"] = "false"
    return harness.child_env(settings, pythonpath=(SCRIPTS,))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="questline-chaos-"))
    probe = workdir / "probe.log"
    redis_server = harness.RedisServer(workdir, durable=True).start()
    try:
        broker = make_broker(args.broker, workdir, redis_server)
    except BaseException:
        redis_server.stop()
        raise
    database_url = harness.recreate_database(PG_SERVER, args.database)
    env = run_environment(args, workdir, redis_server.url, database_url, probe, broker)
    # This process signs up the admin and re-publishes sign-ins: the same settings,
    # without the probe (that is for the workers).
    os.environ.update(
        {k: v for k, v in env.items() if k.startswith("QUESTLINE_") and "PROBE" not in k}
    )
    from models.users import Role
    from questline.infra import db, migrate
    from questline.users import service as users

    migrate.upgrade(database_url)
    with db.transaction() as session:
        users.signup(session, user_name="chaos-admin", password=PASSWORD, role=Role.ADMIN)

    slots: list[WorkerSlot] = []
    api: harness.Server | None = None
    verdict = Verdict()
    t_start = time.monotonic()
    try:
        api = harness.Server(
            "api.main:app",
            env,
            workdir,
            name="api",
            options=["--workers", "2", "--log-level", "warning"],
        )
        api.wait_ready(timeout=60)
        for i in range(3):
            slots.append(WorkerSlot(i, env, workdir, concurrency=2))
            slots[-1].start()
        harness.wait_until(
            lambda: all("ready." in s.output() for s in slots), 90, "three workers", 0.25
        )
        run_under_faults(args, api.url, slots, broker, probe, verdict)
    except Exception as exc:
        verdict.failures.append(f"the run broke: {type(exc).__name__}: {exc}")
    finally:
        for s in slots:
            s.stop()
        if api is not None:
            api.stop()
        broker.stop()
        redis_server.stop()

    summary(verdict, args, time.monotonic() - t_start, workdir)
    if not args.keep:
        shutil.rmtree(workdir, ignore_errors=True)
    failed = bool(verdict.failures)
    if args.expect_failure:
        print("expected the checks to fail:", "they did" if failed else "THEY PASSED")
        return 0 if failed else 1
    return 1 if failed else 0


def run_under_faults(
    args: argparse.Namespace,
    url: str,
    slots: list[WorkerSlot],
    broker: ChaosBroker,
    probe: Path,
    verdict: Verdict,
) -> None:
    """The load and the nemesis together, then the drain and the checks, into verdict."""
    from questline.infra import db

    quests = setup_catalog(url)
    # Before any sign-in: every completion of the run must reach the receiver. Not in the
    # negative control, whose timers are off: it must fail by the input checks alone.
    hook = None if args.negative_control else webhooks.start(url, PASSWORD)
    players = setup_players(url, args.users, args.sign_ins)
    event_quests, api_key = setup_event_quests(url)
    setup_zones(url, players)
    targets = event_targets(players, args.events)
    log(
        f"{len(players)} players, {sum(p.target for p in players)} sign-ins and "
        f"{sum(targets.values())} gameplay events planned, {len(quests)} sign-in quests, "
        f"{len(event_quests)} event quests, dispatch={args.dispatch}, broker={broker.name}"
        + (", NEGATIVE CONTROL" if args.negative_control else "")
    )

    tally, faults, events = Tally(), Faults(), EventTally()
    t0 = time.monotonic()
    game = GameLoad(api_key, targets, events)
    apply_load(args, url, players, slots, broker, tally, faults, verdict, t0, game)
    load_seconds = time.monotonic() - t0
    left_unacked = broker.held()[1]
    log(f"load done in {load_seconds:.0f} s; waiting for the queue and outbox to drain", t0)

    engine = db.get_engine()
    drain_seconds = wait_for_drain(engine, broker, args.drain_timeout, verdict, t0)
    check_quorum_queues(broker, verdict)
    log("drained" if drain_seconds is not None else "did not drain", t0)

    by_events, wallets = verify_events(engine, event_quests, events, [p.user_id for p in players])
    checked = verify(engine, players, quests, tally, wallets)
    if hook is not None:
        webhooks.verify(engine, hook, args.drain_timeout, verdict, t0)
    for part in (checked, by_events):
        verdict.failures += part.failures
        verdict.figures.update(part.figures)
    sweeper_applied = sum(
        int(n) for s in slots for n in re.findall(r"sweeper applied (\d+) stale", s.output())
    )
    outage_failures = 0
    if faults.outage is not None:
        lo, hi = faults.outage
        outage_attempts = [s for t, s in tally.attempts if lo <= t <= hi]
        outage_failures = sum(1 for s in outage_attempts if s != "200")
        verdict.check(
            outage_failures == 0 and bool(outage_attempts),
            f"{outage_failures} of {len(outage_attempts)} sign-ins failed while "
            f"{broker.name} was down",
        )
    verdict.check(not faults.pg_restart_errors, "PostgreSQL could not be restarted")
    verdict.figures.update(
        probe_counts(probe),
        republished=tally.republished,
        left_unacked=left_unacked,
        main_kills=faults.main_kills,
        child_kills=faults.child_kills,
        worker_restarts=sum(s.starts - 1 for s in slots),
        broker=broker.name,
        broker_kills=faults.broker_kills,
        broker_stops=faults.broker_stops,
        pg_restarts=faults.pg_restarts,
        sweeper_applied=sweeper_applied,
        outage_sign_ins=sum(
            1
            for t, _ in tally.attempts
            if faults.outage and faults.outage[0] <= t <= faults.outage[1]
        ),
        outage_failures=outage_failures,
        http_statuses=dict(tally.statuses),
        event_statuses=dict(events.statuses),
        event_batches=f"{events.batches} / {events.retried_batches} / {events.resent_batches}",
        event_timeouts=f"{events.hurried} / {events.retry_duplicates}",
        claim_statuses=dict(tally.claim_statuses),
        claims_ok=sum(tally.claims_ok.values()),
        load_seconds=round(load_seconds, 1),
        drain_seconds=None if drain_seconds is None else round(drain_seconds, 1),
    )


def apply_load(
    args: argparse.Namespace,
    url: str,
    players: list[Player],
    slots: list[WorkerSlot],
    broker: ChaosBroker,
    tally: Tally,
    faults: Faults,
    verdict: Verdict,
    t0: float,
    game: GameLoad,
) -> None:
    """Players in 12 groups, 4 game servers sending their events, the re-publisher, the
    claimers and the nemesis, until every player reached their targets and the scheduled
    faults are over."""
    stop_load, stop_side = threading.Event(), threading.Event()
    groups = 12
    loaders = [
        threading.Thread(
            target=run_players,
            args=(
                url,
                players[g::groups],
                tally,
                sum(p.target for p in players[g::groups]) / args.duration,
                g,
                stop_load,
            ),
            daemon=True,
        )
        for g in range(groups)
    ]
    servers = 4
    loaders += [
        threading.Thread(
            target=run_game_server,
            args=(url, game.api_key, players[g::servers], game.targets, game.tally,
                  args.events / servers / args.duration, g, stop_load),
            daemon=True,
        )
        for g in range(servers)
    ]  # fmt: skip
    side = [
        threading.Thread(target=run_republisher, args=(tally, stop_side), daemon=True),
        threading.Thread(
            target=run_claimers,
            args=(url, players, 1, tally, stop_side),
            daemon=True,
        ),
        threading.Thread(
            target=run_nemesis,
            args=(slots, broker, faults, stop_side, t0),
            kwargs={
                "restart_pg": not args.no_pg_restart and not args.negative_control,
                "kill_every": 2.0,
                "duration": args.duration,
            },
            daemon=True,
        ),
    ]
    for t in loaders + side:
        t.start()
    last_report = t0
    while any(t.is_alive() for t in loaders):
        time.sleep(0.5)
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            done = sum(len(p.answered) for p in players)
            log(f"{done} sign-ins answered, statuses {dict(tally.statuses)}; "
                f"{len(game.tally.accepted)} events accepted", t0)  # fmt: skip
        if time.monotonic() - t0 > args.duration * 4 + 120:
            stop_load.set()
            verdict.failures.append("load did not finish in time")
    # Let the scheduled faults finish before the drain starts.
    faults.schedule_done.wait(args.duration + 60)
    stop_side.set()
    for t in side:
        t.join(60)


@dataclass
class GameLoad:
    """What the game servers need: the API key, events per player, and their tally."""

    api_key: str
    targets: dict[int, int]
    tally: EventTally


def wait_for_drain(
    engine: Any, broker: ChaosBroker, timeout: float, verdict: Verdict, t0: float
) -> float | None:
    """Seconds until no sign-in is pending and no message is queued or unacknowledged;
    None (and a failure) if that takes longer than `timeout`."""
    from sqlalchemy import text

    last_report = time.monotonic()

    def drained() -> bool:
        nonlocal last_report
        with engine.connect() as conn:
            pending = conn.execute(
                text(
                    "SELECT count(*) FROM events WHERE occurred_at IS NOT NULL "
                    "AND processed_at IS NULL AND dead_at IS NULL"
                )
            ).scalar_one()
        # The broker is asked only once the outbox is empty (rabbitmqctl takes a second).
        left = (pending, *broker.held()) if not pending else (pending, "?", "?")
        if time.monotonic() - last_report > 10:
            last_report = time.monotonic()
            log(f"pending inputs {left[0]}, queued messages {left[1]}, unacked {left[2]}", t0)
        return left == (0, 0, 0)

    start = time.monotonic()
    try:
        harness.wait_until(drained, timeout, "the drain", 0.5, ignore=(Exception,))
    except TimeoutError as exc:
        verdict.failures.append(str(exc))
        return None
    return time.monotonic() - start


def summary(verdict: Verdict, args: argparse.Namespace, seconds: float, workdir: Path) -> None:
    f = verdict.figures
    rows = [
        ("mode", "NEGATIVE CONTROL" if args.negative_control else f"normal ({args.dispatch})"),
        ("players", args.users),
        ("sign-ins answered 200", f.get("answered")),
        ("sign-ins stored", f.get("stored")),
        ("re-published to the broker", f.get("republished")),
        ("process_sign_in executions", f.get("task_executions")),
        ("  of which repeats of an event", f.get("repeat_executions")),
        ("  absorbed (already processed)", f.get("absorbed")),
        ("drain_outbox tasks finished / applied",
         f"{f.get('drain_tasks')} / {f.get('applied_by_drain')}"),
        ("applied by the sweeper", f.get("sweeper_applied")),
        ("unacknowledged at the end of the load", f.get("left_unacked")),
        ("deliveries flagged redelivered", f.get("redelivered")),
        ("SIGKILL worker main / pool child", f"{f.get('main_kills')} / {f.get('child_kills')}"),
        ("worker restarts", f.get("worker_restarts")),
        ("broker", f.get("broker")),
        ("broker SIGKILL / 10 s stop", f"{f.get('broker_kills')} / {f.get('broker_stops')}"),
        ("PostgreSQL restarts", f.get("pg_restarts")),
        ("sign-ins during broker stop / failed", f"{f.get('outage_sign_ins')} / "
         f"{f.get('outage_failures')}"),
        ("(user, quest) capped / not capped", f"{f.get('capped_pairs')} / "
         f"{f.get('uncapped_pairs')}"),
        ("claims succeeded", f.get("claims_ok")),
        ("events answered 202 / stored", f"{f.get('events_accepted')} / "
         f"{f.get('events_stored')}"),
        ("event batches / retried / resent", f.get("event_batches")),
        ("batches timed out / retry duplicates", f.get("event_timeouts")),
        ("events LOST / TWICE / OVER CAP", f"{f.get('events_lost')} / "
         f"{f.get('events_twice')} / {f.get('events_over_cap')}"),
        ("event quest states off the fold", f.get("events_wrong_state")),
        ("capped remainders (arrival order)", f.get("events_order_dependent")),
        ("events pending / dead", f"{f.get('events_pending')} / {f.get('events_dead')}"),
        ("WALLET MISMATCHES", f.get("wallet_mismatches")),
        ("LOST", f.get("lost")),
        ("DOUBLE-APPLIED", f.get("double_applied")),
        ("OVER-GRANTED", f.get("over_granted")),
        ("pending / dead", f"{f.get('pending')} / {f.get('dead')}"),
        ("webhook occurrences / delivered", f"{f.get('webhook_occurrences')} / "
         f"{f.get('webhook_delivered')}"),
        ("webhook duplicates / requests", f"{f.get('webhook_duplicates')} / "
         f"{f.get('webhook_requests')}"),
        ("webhook deliveries by status", f.get("webhook_statuses")),
        ("webhooks settled after the drain, s", f.get("webhook_settle_seconds")),
        ("load time, s", f.get("load_seconds")),
        ("time to drain, s", f.get("drain_seconds")),
        ("total run time, s", round(seconds, 1)),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print("\n" + "=" * (width + 24))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"{'http statuses':<{width}}  {f.get('http_statuses')}")
    print(f"{'claim statuses':<{width}}  {f.get('claim_statuses')}")
    print(f"{'event statuses':<{width}}  {f.get('event_statuses')}")
    print("=" * (width + 24))
    if verdict.failures:
        print(f"FAILED: {len(verdict.failures)} check(s)")
        for msg in verdict.failures[:25]:
            print("  -", msg)
        if len(verdict.failures) > 25:
            print(f"  ... and {len(verdict.failures) - 25} more")
    else:
        print("PASSED: nothing lost, nothing applied twice, nothing granted beyond the rules")
    if args.keep:
        print(f"logs in {workdir}")
