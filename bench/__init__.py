"""Questline throughput benchmark: where the limit is, and how close Questline gets.

    python bench/run.py            # the full run (~8 minutes)
    python bench/run.py --quick    # the same measurements, shorter (~2-3 minutes)

It starts its own Redis (a free port) and its own PostgreSQL database on the local
server (`questline_bench`, or $QUESTLINE_BENCH_DB_NAME; never a questline_test*
one), unless given --redis-url / --database-url, and measures side by side, with
the same number of processes:

  (a) ceiling       a raw psycopg2 loop: one locked progress update per event
  (b) Celery floor  no-op tasks/s through Celery with Questline's delivery settings
  (c) backlog       Questline workers draining sign-ins already in the outbox
                    (batched drain with 1, 2, 4 processes; the naive one task per
                    sign-in with --processes); the batched drain again with
                    RabbitMQ as the broker (a vhost of the run's own, --rabbitmq-url)
  (d) end to end    a steady offered load of refresh sign-ins over HTTP:
                    sustained sign-ins/s and sign-in -> processed lag p50/p95/p99
  (e) API paths     password login vs bare argon2 verification; cached GET /quests
                    vs a bare FastAPI JSON endpoint
  (f) ingestion     POST /events vs a raw multi-row INSERT loop
  (g) gameplay      the gameplay drain (20 quests) vs the sign-in drain
  (h) gRPC          RecordEvents vs POST /events with the same batches; the gameplay
                    drain with the gRPC catalog source vs the database source

Every run that applies sign-ins is checked for exactness afterwards: applied =
sent, and every user's progress, rewards and history match their sign-in count.
Prints a table with ratios and writes a PNG plot (needs the `bench` extra).

The package: main.py (the options and the order of the runs), system.py (the
database, Redis and the processes under test, started by the shared harness in
harness/), measure.py (each measurement), load.py (the HTTP load generators),
report.py (the table and the plot). `python bench/run.py` is the entry point.
"""
