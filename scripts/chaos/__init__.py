"""The fault-injection run: prove that no acknowledged sign-in or gameplay event is lost
or applied twice and that no reward is granted beyond the rules, while workers, Redis
and PostgreSQL are killed and restarted under load.

    python scripts/chaos.py                                   # the full run (~3 min)
    python scripts/chaos.py --negative-control --expect-failure
    python scripts/chaos.py --broker rabbitmq                 # the same, killing RabbitMQ

The run starts its own Redis (a free port, AOF fsync always) and uses its own
PostgreSQL database on the local server (questline_chaos, or --database, or
$QUESTLINE_CHAOS_DB_NAME; never a questline_test* one); three Celery workers
run in restart loops and the all-in-one API in uvicorn. Players sign in (mostly
refresh, some password logins), 10 % of sign-ins are published to the broker a
second time, and players claim concurrently with repeated and fresh
Idempotency-Keys; game servers send gameplay events over HTTP (POST /events with an
API key), retrying batches with the same idempotency keys until answered, for quests
of every shape (daily in the players' zones, a day streak, a count with a condition,
a capped sum, a bundle). Meanwhile a nemesis SIGKILLs worker main processes and pool
children by PID, SIGKILLs Redis and restarts it, restarts PostgreSQL, and stops
Redis for 10 s while logins go on. After the queue and the outbox drain, every
user's state is checked against the rules; for gameplay events the expected state is
the pure engine's fold of the accepted events. The exit status is 0 when every check
holds (or, with --expect-failure, when at least one fails).

--negative-control turns off the idempotency guard and the sweeper: the run must
then fail, which shows that the checks can see lost and double-applied sign-ins.

The package: main.py (the run and its summary), load.py (players, claims,
re-published messages), events.py (event quests, zones, the game servers),
expect.py (the events' verdict from engine.fold), nemesis.py (the faults, and the
restart loops of the workers), checks.py (the verdict from the database), probe.py (loaded into the
workers, it logs every task start and end). Processes are started by the shared
harness (harness/).
"""

from __future__ import annotations

import time


def log(msg: str, t0: float = 0.0) -> None:
    """A line of the run's progress, with the seconds since t0 when given."""
    stamp = f"{time.monotonic() - t0:7.1f}s " if t0 else ""
    print(f"[chaos] {stamp}{msg}", flush=True)
