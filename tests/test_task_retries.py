"""One retry policy for the sign-in tasks: transient database errors are retried by
Celery (autoretry with backoff and jitter) and never count towards dead-lettering."""

from __future__ import annotations

import sqlalchemy as sa

from models import Event
from questline.config import Settings
from questline.infra import db
from tests import factories as f
from tests import support
from workers import tasks


def test_one_policy_for_both_tasks_with_countdowns_below_the_visibility_timeout() -> None:
    for task in (tasks.process_sign_in, tasks.drain_outbox):
        assert task.autoretry_for == (tasks.TransientDatabaseError,)
        assert (task.retry_backoff, task.retry_jitter) == (1, True)
        assert task.retry_backoff_max == tasks.RETRY_BACKOFF_MAX
        assert task.max_retries == Settings().task_max_retries
    # The lowest visibility timeout the settings accept still exceeds every countdown.
    [lowest] = [
        m.ge for m in Settings.model_fields["broker_visibility_timeout_seconds"].metadata
    ]
    assert tasks.RETRY_BACKOFF_MAX < lowest


def test_a_transient_error_is_retried_and_never_counted_against_the_sign_in(
    broker: support.Broker, no_worker: None
) -> None:
    """The worker's database sessions give up waiting for a lock after 0.2 s (a real
    PostgreSQL lock timeout, a transient error) while this test holds the player's
    progress row: the task is retried again and again, the sign-in is not counted as
    failed (its own row is free, so a count would be recorded), and once the lock is
    released it is applied. On both brokers: on RabbitMQ each retry's countdown goes
    through the broker's delay queues (quorum queues cannot hold it in the worker), and
    comes back to the queue of the task's route, so this test's worker is the only one
    on the routed queues (no_worker)."""
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        [event_id] = f.add_sign_ins(session, user_id)
        f.keep_from_sweeper(session, [event_id])  # only our message applies it

    engine = db.get_engine()
    holder = engine.connect()
    blocker = holder.begin()
    holder.execute(
        sa.text(
            "INSERT INTO user_quest_progress (user_id, quest_id, completions, streak_periods, "
            "best_streak, streak_completions, updated_at) VALUES (:u, 1, 0, '[]', 0, 0, now())"
        ),
        {"u": user_id},
    )
    blocker.commit()
    blocker = holder.begin()
    holder.execute(
        sa.text("SELECT 1 FROM user_quest_progress WHERE user_id = :u FOR UPDATE"),
        {"u": user_id},
    )
    worker = support.start_worker(
        name="retries",
        PGOPTIONS="-c lock_timeout=200",
        QUESTLINE_TASK_MAX_RETRIES="100",
        **broker.env,
    )
    try:
        broker.send("questline.process_sign_in", event_id)
        support.wait_until(
            lambda: worker.output().count("Retry in") >= 3, 60, "three retries of the task"
        )
        with db.transaction() as session:
            event = session.get_one(Event, event_id)
            assert (event.attempts, event.processed_at, event.dead_at) == (0, None, None)
        blocker.rollback()

        def applied() -> Event | None:
            with db.transaction() as session:
                event = session.get_one(Event, event_id)
                return event if event.processed_at is not None else None

        event = support.wait_until(applied, 60, "the sign-in to be applied after the lock")
        assert (event.attempts, event.last_error) == (0, None)
        assert "LockNotAvailable" in worker.output()
    finally:
        holder.close()
        worker.stop()
