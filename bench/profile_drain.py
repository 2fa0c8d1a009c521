"""cProfile of the gameplay backlog drain, in this process: `python bench/profile_drain.py
[--events N] [--top N]`.

The same 20 quests and events as part (g) of bench/run.py, in the scratch database
questline_bench_profile ($QUESTLINE_BENCH_DB_NAME + "_profile"), drained by
questline.outbox.drain() (200 inputs per transaction, as a worker process does); prints
the heaviest functions by cumulative and by own time, SQL statement counts, and checks
the result against engine.fold.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import harness  # noqa: E402
from bench.gameplay import (  # noqa: E402
    check_against_fold,
    create_quests,
    insert_gameplay_backlog,
    pending_inputs,
)
from bench.system import Bench  # noqa: E402

DATABASE = os.environ.get("QUESTLINE_BENCH_DB_NAME", "questline_bench") + "_profile"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument(
        "--compare",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="no profile: drain sign-ins (seed quest) and gameplay events (20 quests) in "
        "turns, ROUNDS times each, and print wall time and CPU (this process and its "
        "PostgreSQL backend) per input",
    )
    args = parser.parse_args()
    database_url = harness.recreate_database(
        "postgresql+psycopg2://postgres@127.0.0.1:5432", DATABASE
    )
    data_dir = Path(tempfile.mkdtemp(prefix="questline-profile-"))
    os.environ.update(
        QUESTLINE_DATABASE_URL=database_url,
        QUESTLINE_REDIS_URL=args.redis_url,
        QUESTLINE_DATA_DIR=str(data_dir),
    )
    from questline.infra import migrate

    migrate.upgrade(database_url)
    b = Bench(database_url, args.redis_url, data_dir, 1, True)
    if args.compare:
        return compare(b, args.events, args.compare)
    b.sql("UPDATE quests SET active = false WHERE quest_id = 1")
    b.reset()
    defs = create_quests(b)
    b.make_users(args.events // 10)
    insert_gameplay_backlog(b, args.events)

    from sqlalchemy import event

    from questline import outbox
    from questline.infra import db

    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    event.listen(db.get_engine(), "before_cursor_execute", count)
    profile = cProfile.Profile()
    t0 = time.perf_counter()
    profile.enable()
    outbox.drain()
    profile.disable()
    profile.dump_stats("/tmp/drain.prof")
    elapsed = time.perf_counter() - t0
    left = pending_inputs(b)
    history = b.sql("SELECT count(*) FROM events WHERE occurred_at IS NULL")[0][0]
    print(
        f"{args.events} inputs in {elapsed:.2f} s ({args.events / elapsed:,.0f}/s, one process, "
        f"profiled), {statements} SQL statements, {history / args.events:.1f} history rows "
        f"per input, {left} left"
    )
    print("exact" if not (problem := check_against_fold(b, defs, args.events)) else problem)
    stats = pstats.Stats(profile)
    stats.sort_stats("cumulative").print_stats(args.top)
    stats.sort_stats("tottime").print_stats(args.top)
    return 1 if problem else 0


def compare(b: Bench, events: int, rounds: int) -> int:
    """Sign-in and gameplay drains in turns, in this process: wall time and CPU per input.

    CPU is this process's and its PostgreSQL backend's (from /proc), so other load on the
    machine moves the wall-clock figures much more than the CPU ones."""
    from sqlalchemy import text

    from questline import outbox
    from questline.infra import db

    def backend_cpu() -> float:
        with db.transaction() as s:
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar_one()
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def run(kind: str) -> tuple[float, float, float]:
        b.sql("UPDATE quests SET active = %s WHERE quest_id = 1", (kind == "sign-ins",))
        b.sql(
            "UPDATE quests SET active = %s WHERE quest_id = ANY(%s)",
            (kind == "gameplay", [d.quest_id for d in defs]),
        )
        b.sql("UPDATE catalog_state SET version = version + 1")
        b.reset()
        if kind == "sign-ins":
            b.make_users(max(1, events // 5))
            b.insert_backlog(events, max(1, events // 5))
        else:
            b.make_users(events // 10)
            insert_gameplay_backlog(b, events)
        db.get_engine().dispose()
        pg0, cpu0, t0 = backend_cpu(), time.process_time(), time.perf_counter()
        outbox.drain()
        wall, cpu, pg = time.perf_counter() - t0, time.process_time() - cpu0, backend_cpu() - pg0
        problem = b.check_exact(events) if kind == "sign-ins" else check_against_fold(
            b, defs, events
        )
        if problem or pending_inputs(b):
            raise SystemExit(f"{kind}: {problem or 'inputs left pending'}")
        return wall, cpu, pg

    defs = create_quests(b)
    figures: dict[str, list[tuple[float, float, float]]] = {"sign-ins": [], "gameplay": []}
    for _ in range(rounds):
        for kind in figures:
            figures[kind].append(run(kind))
    us = 1e6 / events
    for kind, runs in figures.items():
        for wall, cpu, pg in runs:
            print(
                f"{kind:9} wall {wall * us:6.0f} us/input  worker CPU {cpu * us:5.0f}  "
                f"PostgreSQL CPU {pg * us:5.0f}  total CPU {(cpu + pg) * us:5.0f}"
            )
    best = {k: min(c + p for _, c, p in runs) for k, runs in figures.items()}
    fastest = {k: min(w for w, _, _ in runs) for k, runs in figures.items()}
    print(
        f"gameplay / sign-ins, by total CPU per input (best of {rounds}): "
        f"{best['sign-ins'] / best['gameplay']:.2f}; by wall time: "
        f"{fastest['sign-ins'] / fastest['gameplay']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
