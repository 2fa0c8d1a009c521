"""cProfile of the gameplay backlog drain, in this process: `python bench/profile_drain.py
[--events N] [--top N]`.

The same 20 quests and events as part (g) of bench/run.py, in the scratch database
questline_bench_profile, drained by questline.outbox.drain() (200 inputs per
transaction, as a worker process does); prints the heaviest functions by cumulative
and by own time, SQL statement counts, and checks the result against engine.fold.
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

DATABASE = "questline_bench_profile"


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
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


if __name__ == "__main__":
    sys.exit(main())
