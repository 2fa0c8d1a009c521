"""Deliveries to one endpoint go out in batches: the transactions around them on real
PostgreSQL (taking, leasing, counting, giving back), and a real worker sending a
backlog over kept-alive connections, each delivery exactly once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from harness.receiver import Receiver, always
from models import WebhookDelivery
from models.base import utcnow
from questline.config import get_settings
from questline.infra import db
from questline.webhooks import repository, service, signing
from questline.webhooks.service import Answer, Batch, Skipped
from tests import support
from tests.test_webhooks import webhook_env


def seed(url: str, n: int) -> tuple[int, list[int]]:
    """A webhook on `url` and n pending deliveries with no message out, as a burst of
    grants leaves them: (webhook_id, delivery ids in order)."""
    with db.transaction() as s:
        webhook_id = s.execute(
            sa.text(
                "INSERT INTO webhooks (url, events, secret, created_at) VALUES "
                "(:url, '[\"quest.completed\"]', :secret, now()) RETURNING webhook_id"
            ),
            {"url": url, "secret": signing.new_secret()},
        ).scalar_one()
        ids = s.execute(
            sa.text(
                "WITH e AS (INSERT INTO events (user_id, type, data, created_at) "
                "SELECT 1, 'quest_completed', '{}', now() FROM generate_series(1, :n) "
                "RETURNING event_id) "
                "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, payload, "
                "status, attempts, next_attempt_at, created_at) "
                "SELECT :w, event_id, 'quest.completed', jsonb_build_object('id', "
                "'msg_' || event_id, 'type', 'quest.completed', 'created_at', now(), "
                "'data', jsonb_build_object('event_id', event_id, 'user_id', 1)), "
                "'pending', 0, now() - interval '1 second', now() FROM e "
                "RETURNING delivery_id"
            ),
            {"n": n, "w": webhook_id},
        ).scalars()
        return int(webhook_id), sorted(int(i) for i in ids)


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = get_settings()
    monkeypatch.setattr(settings, "webhook_batch_size", 4)
    monkeypatch.setattr(settings, "webhook_max_in_flight_per_endpoint", 2)
    return


def take(delivery_id: int) -> Batch | Skipped:
    with db.transaction() as s:
        return service.start_attempts(s, delivery_id)


def rows(ids: list[int]) -> dict[int, tuple[Any, ...]]:
    with db.transaction() as s:
        found = s.execute(
            sa.select(
                WebhookDelivery.delivery_id,
                WebhookDelivery.status,
                WebhookDelivery.attempts,
                WebhookDelivery.sending_until,
            ).where(WebhookDelivery.delivery_id.in_(ids))
        ).all()
    return {int(r[0]): tuple(r[1:]) for r in found}


def test_a_task_takes_its_delivery_and_more_of_the_endpoint_under_one_lease(
    small_batches: None,
) -> None:
    webhook_id, ids = seed("http://127.0.0.1:9/hooks", 10)
    first = take(ids[5])
    assert isinstance(first, Batch)
    # Its own delivery first, then the oldest due of the same endpoint.
    assert [a.delivery_id for a in first.attempts] == [ids[5], ids[0], ids[1], ids[2]]
    assert {a.number for a in first.attempts} == {1}
    taken = rows([a.delivery_id for a in first.attempts])
    leases = {lease for _status, _n, lease in taken.values()}
    assert len(leases) == 1
    assert None not in leases
    # A delivery a batch holds is not taken again, by its own message or by another batch.
    assert take(ids[0]) == Skipped("an attempt is under way")
    second = take(ids[3])
    assert isinstance(second, Batch)
    assert [a.delivery_id for a in second.attempts] == [ids[3], ids[4], ids[6], ids[7]]
    with db.transaction() as s:
        assert repository.in_flight(s, webhook_id, now=utcnow()) == 2
    # The cap counts batches: a third waits, and its message is marked as taken.
    assert take(ids[8]) == Skipped("2 batches to this endpoint under way")


def test_finishing_records_each_answer_and_gives_back_what_was_not_tried(
    small_batches: None,
) -> None:
    webhook_id, ids = seed("http://127.0.0.1:9/hooks", 6)
    batch = take(ids[0])
    assert isinstance(batch, Batch)
    answers = [Answer(200, None, 0.01), Answer(500, "HTTP 500", 0.01), None, None]
    with db.transaction() as s:
        outcomes = service.finish_attempts(s, batch, answers)
    assert outcomes == ["delivered", "retry", service.NOT_TRIED, service.NOT_TRIED]
    after = rows(ids[:4])
    assert after[ids[0]] == ("delivered", 1, None)
    assert after[ids[1]][:2] == ("pending", 1)
    # Not tried: not counted, not leased, due again at once.
    assert after[ids[2]] == ("pending", 0, None)
    assert after[ids[3]] == ("pending", 0, None)
    with db.transaction() as s:
        assert repository.in_flight(s, webhook_id, now=utcnow()) == 0
        # The freed slot went on to the next due delivery with a message.
        queued = s.scalars(
            sa.select(WebhookDelivery.delivery_id).where(WebhookDelivery.enqueued_at.is_not(None))
        ).all()
    assert len(queued) == 1


def test_a_give_back_after_the_lease_ran_out_leaves_the_later_attempt_alone(
    small_batches: None,
) -> None:
    _webhook_id, ids = seed("http://127.0.0.1:9/hooks", 1)
    old = take(ids[0])
    assert isinstance(old, Batch)
    with db.transaction() as s:  # the lease runs out; another batch takes it again
        s.execute(sa.update(WebhookDelivery).values(sending_until=utcnow() - timedelta(seconds=1)))
    new = take(ids[0])
    assert isinstance(new, Batch)
    assert new.attempts[0].number == 2
    with db.transaction() as s:
        assert service.finish_attempts(s, old, [None]) == [service.NOT_TRIED]
    status, attempts, lease = rows(ids)[ids[0]]
    assert (status, attempts) == ("pending", 2)
    assert lease is not None


def test_a_session_that_read_a_delivery_before_another_batch_took_it_skips_it(
    session: Session, small_batches: None
) -> None:
    """The first look has no lock: what decides is the row as locked, read afresh (a
    stale copy in the session once sent a delivery twice)."""
    _webhook_id, ids = seed("http://127.0.0.1:9/hooks", 1)
    copy = repository.get_delivery(session, ids[0])  # held, as the session keeps it
    assert copy is not None
    assert copy.sending_until is None
    other = take(ids[0])
    assert isinstance(other, Batch)
    assert service.start_attempts(session, ids[0]) == Skipped("an attempt is under way")


def test_a_backlog_goes_out_in_batches_over_kept_alive_connections_each_once(
    no_worker: None,
) -> None:
    n = 400
    with Receiver(always(200)) as receiver:
        webhook_id, ids = seed(receiver.url, n)
        with support.start_worker(name="hooks-batches", queues="webhooks", **webhook_env()):
            support.wait_until(
                lambda: rows(ids) and all(r[0] == "delivered" for r in rows(ids).values()),
                120,
                f"the {n} deliveries",
            )
        requests = receiver.requests()
    assert len(requests) == len({r.message_id for r in requests}) == n
    assert {r[1] for r in rows(ids).values()} == {1}
    # Batches of webhook_batch_size (50) over one connection each: far fewer connections
    # than deliveries (one each without batches).
    connections = {r.connection for r in requests}
    assert len(connections) <= n // 10, len(connections)
    with db.transaction() as s:
        assert service.counts(s) == {"delivered": n}
        assert repository.in_flight(s, webhook_id, now=utcnow()) == 0
