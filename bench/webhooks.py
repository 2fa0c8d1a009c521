"""Webhook delivery throughput to one endpoint: `python bench/webhooks.py [--deliveries N]`.

A scratch database ($QUESTLINE_BENCH_DB_NAME, default questline_bench_hooks) holds one
webhook on a loopback receiver that answers 200 (or 500 to a share of requests, with
--refuse), and N pending deliveries with no task message out, as a burst of grants
leaves them. One webhook worker (`-Q webhooks`) starts, its timer sends the messages,
and the script prints how long until every delivery is delivered, deliveries per
second, the receiver's requests, and the worker's CPU per delivery. A figure for this
machine at this moment: compare runs made side by side.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import harness  # noqa: E402
from harness.receiver import Receiver  # noqa: E402

DATABASE = os.environ.get("QUESTLINE_BENCH_DB_NAME", "questline_bench") + "_hooks"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4, help="worker processes")
    parser.add_argument("--refuse", type=float, default=0.0, help="share answered 500")
    parser.add_argument("--pg-server", default="postgresql+psycopg2://postgres@127.0.0.1:5432")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    args = parser.parse_args()

    import redis
    import sqlalchemy as sa

    from questline.infra import migrate

    url = harness.recreate_database(args.pg_server, DATABASE)
    migrate.upgrade(url)
    redis.Redis.from_url(args.redis_url).flushdb()
    rng = random.Random(7)
    with Receiver(lambda _r: 500 if rng.random() < args.refuse else 200) as receiver:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            seed(conn, receiver.url, args.deliveries)
        env = harness.child_env(
            {
                "QUESTLINE_DATABASE_URL": url,
                "QUESTLINE_REDIS_URL": args.redis_url,
                "QUESTLINE_WEBHOOK_ALLOW_PRIVATE": "true",
                "QUESTLINE_WEBHOOK_RETRY_BASE_SECONDS": "0.2",
                "QUESTLINE_WEBHOOK_TIMER_INTERVAL_SECONDS": "0.5",
            },
            {},
        )
        logs = Path(os.environ.get("TMPDIR", "/tmp")) / "questline-bench-hooks"
        logs.mkdir(exist_ok=True)
        worker = harness.start_worker(
            env, logs, name="hooks", queues="webhooks", concurrency=args.concurrency
        )
        try:
            started = time.monotonic()
            cpu_before = tree_cpu(worker.pid)
            harness.wait_until(
                lambda: pending(engine) == 0, 600 + args.deliveries * 0.5, "the deliveries"
            )
            seconds = time.monotonic() - started
            cpu = tree_cpu(worker.pid) - cpu_before
        finally:
            worker.stop()
        requests = len(receiver.requests())
        if os.environ.get("BENCH_DEBUG"):
            for r in receiver.requests():
                if r.number > 1 or r.status != 200:
                    print("again", repr(r.message_id), r.status, r.path, r.number)
        delivered = len({r.message_id for r in receiver.requests() if r.status == 200})
    engine.dispose()
    print(f"deliveries                {args.deliveries}")
    print(f"delivered (receiver)      {delivered}")
    print(f"requests                  {requests}")
    print(f"seconds to deliver all    {seconds:.1f}")
    print(f"deliveries per second     {args.deliveries / seconds:.0f}")
    print(f"worker CPU per delivery   {cpu / args.deliveries * 1e3:.2f} ms")
    return 0 if delivered == args.deliveries else 1


def seed(conn: object, receiver_url: str, n: int) -> None:
    """One webhook, n history events and one pending delivery of each, no message out."""
    from sqlalchemy import text

    from questline.webhooks import signing

    run = conn.execute  # type: ignore[attr-defined]
    run(
        text(
            "INSERT INTO webhooks (url, events, secret, created_at) "
            "VALUES (:url, '[\"quest.completed\"]', :secret, now())"
        ),
        {"url": receiver_url, "secret": signing.new_secret()},
    )
    run(
        text(
            "INSERT INTO events (user_id, type, data, created_at) "
            "SELECT 1, 'quest_completed', '{}', now() FROM generate_series(1, :n)"
        ),
        {"n": n},
    )
    run(
        text(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, status, "
            "attempts, next_attempt_at, created_at) "
            "SELECT 1, event_id, 'quest.completed', jsonb_build_object('id', 'msg_' || event_id, "
            "'type', 'quest.completed', 'created_at', now(), 'data', jsonb_build_object("
            "'event_id', event_id, 'user_id', 1)), 'pending', 0, now(), now() FROM events"
        )
    )


def pending(engine: object) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:  # type: ignore[attr-defined]
        return int(
            conn.execute(
                text("SELECT count(*) FROM webhook_deliveries WHERE status = 'pending'")
            ).scalar_one()
        )


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc."""
    total = 0.0
    for p in [pid, *harness.children_of(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


if __name__ == "__main__":
    sys.exit(main())
