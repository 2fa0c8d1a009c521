"""The events table's retention (QUESTLINE_EVENT_RETENTION_DAYS, off by default):
the rule that decides which inputs an active quest still counts is pure and tested
alone; the deletes run on real PostgreSQL, from the pruner, the task and the command,
and recompute gives the same answer after a prune as before it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select, update

from models import DeliveryStatus, Event, EventType, Quest, Webhook, WebhookDelivery
from models.base import utcnow
from questline import retention
from questline.catalog.source import BrokenQuest, Catalog
from questline.config import Settings, get_settings
from questline.engine import parse_quest
from questline.infra import db
from questline.quests import recompute
from tests import factories as f
from tests import support

DAY = timedelta(days=1)
RETENTION_DAYS = 400
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def quest(quest_id: int, event: str, starts_at: datetime | None = None,
          ends_at: datetime | None = None) -> Any:  # fmt: skip
    return parse_quest(
        {
            "quest_id": quest_id,
            "target": 2,
            "trigger": {"event": event},
            "rewards": [{"item": "gold", "qty": 1}],
            "starts_at": starts_at,
            "ends_at": ends_at,
        }
    )


# --- the rule -------------------------------------------------------------------------


def test_kept_windows_are_each_active_quests_type_inside_its_window() -> None:
    s, e = T0, T0 + 30 * DAY
    catalog = Catalog(
        version=1,
        quests=(
            quest(1, "sign_in"),
            quest(2, "sign_in", starts_at=s),  # within the forever one above
            quest(3, "score", starts_at=s, ends_at=e),
            quest(4, "score", ends_at=s),
            quest(5, "play", starts_at=e),
        ),
    )
    assert retention.kept_windows(catalog) == [
        ("play", e, None),
        ("score", None, s),
        ("score", s, e),
        ("sign_in", None, None),
    ]
    assert retention.kept_windows(Catalog(version=1, quests=())) == []


def test_an_unreadable_quest_keeps_its_type_or_everything() -> None:
    typed = Catalog(version=1, quests=(), broken=(BrokenQuest(7, "score", "bad"),))
    assert retention.kept_windows(typed) == [("score", None, None)]
    untyped = Catalog(version=1, quests=(), broken=(BrokenQuest(7, None, "bad"),))
    assert retention.kept_windows(untyped) is None


def test_retention_is_off_by_default_and_outlives_the_accepted_event_age() -> None:
    assert Settings().event_retention_days is None
    with pytest.raises(ValidationError, match="event_max_age_seconds"):
        Settings(event_retention_days=1)  # the default accepts events a day late
    with pytest.raises(ValidationError):
        Settings(event_retention_days=0)
    assert Settings(event_retention_days=2).event_retention_days == 2
    assert Settings(event_retention_days=1, event_max_age_seconds=3600).event_retention_days == 1


# --- the deletes, on PostgreSQL ------------------------------------------------------------


@pytest.fixture
def retention_days(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[int | None], None]]:
    def set_days(days: int | None) -> None:
        if days is None:
            monkeypatch.delenv("QUESTLINE_EVENT_RETENTION_DAYS", raising=False)
        else:
            monkeypatch.setenv("QUESTLINE_EVENT_RETENTION_DAYS", str(days))
        get_settings.cache_clear()

    yield set_days
    get_settings.cache_clear()


@dataclass(frozen=True)
class Rows:
    user_id: int
    ids: dict[str, int]
    window: tuple[datetime, datetime]  # of the active quest on "score"


# What a prune with a 400-day retention leaves, by row name (see make_rows).
KEPT = {
    "old sign-in (the seed quest counts every sign-in)",
    "old score inside the score quest's window",
    "old play, pending",
    "old play, dead",
    "old play stored lately (backfilled)",
    "recent play",
    "recent history",
}
DELETED = {
    "old play (no quest counts it)",
    "old score before the score quest's window",
    "old history",
}


def make_rows(now: datetime, more_scores: int = 0) -> Rows:
    """Rows on both sides of the cutoff, stored in time order (ids grow with it), and
    `more_scores` old processed scores at window start + 0, 1, 2 ... days; a negative
    number: before the window."""
    old = now - (RETENTION_DAYS + 100) * DAY
    window = (old - 20 * DAY, old + 20 * DAY)
    lately = now - 2 * DAY
    with db.transaction() as session:
        user_id = f.add_user(session).user_id
        f.add_v2_quest(session, target=2, trigger={"event": "score"},
                       starts_at=window[0], ends_at=window[1])  # fmt: skip

        def add(name: str, stored: datetime, kind: str, occurred: datetime | None,
                state: str = "processed") -> tuple[str, int]:  # fmt: skip
            event = Event(
                user_id=user_id,
                type=kind,
                data={},
                created_at=stored,
                occurred_at=occurred,
                tz="UTC" if occurred else None,
                value=Decimal(1) if occurred else None,
                processed_at=stored if occurred and state == "processed" else None,
                dead_at=stored if state == "dead" else None,
                idempotency_key=f"k-{name}" if occurred and kind != "sign_in" else None,
            )
            session.add(event)
            session.flush()
            return name, event.event_id

        ids = dict(
            [
                add("old sign-in (the seed quest counts every sign-in)", old, "sign_in", old),
                add("old play (no quest counts it)", old, "play", old),
                add("old score inside the score quest's window", old, "score", old),
                add("old score before the score quest's window", old, "score", old - 30 * DAY),
                add("old play, pending", old, "play", old, state="pending"),
                add("old play, dead", old, "play", old, state="dead"),
                add("old history", old, EventType.QUEST_PROGRESS, None),
                *[
                    add(f"score {n}", old, "score", window[0] + n * DAY)
                    for n in range(-2, more_scores)
                    if more_scores
                ],
                add("old play stored lately (backfilled)", lately, "play", old),
                add("recent play", now, "play", now),
                add("recent history", now, EventType.REWARD_EARNED, None),
            ]
        )
    assert set(ids) - {n for n in ids if n.startswith("score ")} == KEPT | DELETED
    return Rows(user_id, ids, window)


def remaining(rows: Rows) -> set[str]:
    """The named rows left (the extra scores aside)."""
    with db.transaction() as session:
        left = set(session.scalars(select(Event.event_id).where(Event.user_id == rows.user_id)))
    return {
        name
        for name, event_id in rows.ids.items()
        if event_id in left and not name.startswith("score ")
    }


def test_without_a_retention_no_event_is_deleted(
    no_worker: None, retention_days: Callable[[int | None], None]
) -> None:
    rows = make_rows(utcnow())
    retention_days(None)
    assert retention.prune().events == 0
    assert remaining(rows) == KEPT | DELETED


def test_prune_deletes_old_events_no_active_quest_counts(
    no_worker: None, retention_days: Callable[[int | None], None]
) -> None:
    rows = make_rows(utcnow())
    retention_days(RETENTION_DAYS)
    assert retention.prune().events == len(DELETED)
    assert remaining(rows) == KEPT
    assert retention.prune().events == 0  # nothing left to do

    # Once no active quest counts sign-ins, the old ones go too.
    with db.transaction() as session:
        session.execute(update(Quest).where(Quest.quest_id == 1).values(active=False))
        f.catalog_changed(session)
    assert retention.prune().events == 1
    assert remaining(rows) == KEPT - {"old sign-in (the seed quest counts every sign-in)"}


def test_deletes_go_in_chunks_across_the_whole_range(
    no_worker: None, retention_days: Callable[[int | None], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(retention, "CHUNK", 3)
    rows = make_rows(utcnow())
    retention_days(RETENTION_DAYS)
    assert retention.prune().events == len(DELETED)
    assert remaining(rows) == KEPT


def test_recompute_rebuilds_the_same_state_after_a_prune(
    no_worker: None, retention_days: Callable[[int | None], None]
) -> None:
    """The inputs kept are those recompute folds: its answer does not change. Deleting
    an input inside the window (what the rule prevents) does change it."""
    # Three more inputs inside the window (four in all: two completions), two before it.
    rows = make_rows(utcnow(), more_scores=3)
    with db.transaction() as session:
        recompute.rebuild_user(session, rows.user_id, apply=True)
    with db.transaction() as session:
        assert recompute.rebuild_user(session, rows.user_id) == []

    retention_days(RETENTION_DAYS)
    assert retention.prune().events == len(DELETED) + 2  # the two before the window
    with db.transaction() as session:
        assert recompute.rebuild_user(session, rows.user_id) == []

    # The negative control: an input inside the window gone, the rebuild differs.
    with db.transaction() as session:
        session.delete(
            session.get_one(Event, rows.ids["old score inside the score quest's window"])
        )
    with db.transaction() as session:
        assert recompute.rebuild_user(session, rows.user_id) != []


def test_the_prune_command_reports_what_it_deleted(
    no_worker: None,
    retention_days: Callable[[int | None], None],
    capsys: pytest.CaptureFixture[str],
) -> None:
    from questline.commands import cli

    rows = make_rows(utcnow())
    retention_days(None)
    assert cli.main(["prune"]) == 0
    out = capsys.readouterr().out
    assert "and 0 events" in out
    assert "QUESTLINE_EVENT_RETENTION_DAYS is not set" in out
    retention_days(RETENTION_DAYS)
    assert cli.main(["prune"]) == 0
    assert f"and {len(DELETED)} events" in capsys.readouterr().out
    assert remaining(rows) == KEPT


def test_each_worker_prunes_old_events_on_its_timer(no_worker: None) -> None:
    rows = make_rows(utcnow())
    with support.worker_running(
        name="event-pruner",
        queues="prune-test",  # no task reaches it: only its timer can prune
        QUESTLINE_PRUNE_INTERVAL_SECONDS="0.5",
        QUESTLINE_SWEEPER_ENABLED="false",
        QUESTLINE_EVENT_RETENTION_DAYS=str(RETENTION_DAYS),
    ) as worker:
        support.wait_until(lambda: remaining(rows) == KEPT, 60, "the worker to prune events")
        support.wait_until(
            lambda: f"pruned {len(DELETED)} events past their retention" in worker.output(),
            10,
            "the pruner's log line",
        )


# --- webhook deliveries ----------------------------------------------------------------


def add_delivery(event_id: int, status: str, written: datetime, webhook: int = 0) -> int:
    """A delivery of an event to a webhook (the `webhook`-th, made here), in `status`."""
    with db.transaction() as session:
        webhook_ids = list(session.scalars(select(Webhook.webhook_id).order_by("webhook_id")))
        while len(webhook_ids) <= webhook:
            made = Webhook(url="http://192.0.2.1/hooks", events=["quest.completed"],
                           secret="whsec_test")  # fmt: skip
            session.add(made)
            session.flush()
            webhook_ids.append(made.webhook_id)
        delivery = WebhookDelivery(
            webhook_id=webhook_ids[webhook],
            event_id=event_id,
            event_type="quest.completed",
            payload={"id": f"msg_{event_id}"},
            status=status,
            created_at=written,
            next_attempt_at=written if status == DeliveryStatus.PENDING else None,
        )
        session.add(delivery)
        session.flush()
        return int(delivery.delivery_id)


def deliveries_left() -> set[int]:
    with db.transaction() as session:
        return set(session.scalars(select(WebhookDelivery.delivery_id)))


def test_old_history_goes_with_its_settled_deliveries_and_stays_while_one_is_pending(
    no_worker: None, retention_days: Callable[[int | None], None]
) -> None:
    """A delivery references the history entry it announces: once settled it goes with
    the entry; a pending one keeps the entry (and itself) until it settles."""
    now = utcnow()
    rows = make_rows(now)
    written = now - 2 * DAY  # recent: the deliveries' own retention does not take them
    old_entry = rows.ids["old history"]
    pending = add_delivery(old_entry, DeliveryStatus.PENDING, written, webhook=0)
    delivered = add_delivery(old_entry, DeliveryStatus.DELIVERED, written, webhook=1)
    recent = add_delivery(rows.ids["recent history"], DeliveryStatus.FAILED, written)
    retention_days(RETENTION_DAYS)

    assert retention.prune().events == len(DELETED) - 1
    assert remaining(rows) == KEPT | {"old history"}
    assert deliveries_left() == {pending, recent}
    assert delivered not in deliveries_left()
    with db.transaction() as session:
        session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.delivery_id == pending)
            .values(status=DeliveryStatus.DELIVERED)
        )
    # Settled now: the next prune takes the entry and its delivery.
    assert retention.prune().events == 1
    assert remaining(rows) == KEPT
    assert deliveries_left() == {recent}


def test_settled_deliveries_go_after_their_own_retention_pending_ones_stay(
    no_worker: None,
) -> None:
    now = utcnow()
    rows = make_rows(now)
    days = get_settings().webhook_delivery_retention_days
    old, lately = now - (days + 1) * DAY, now - (days - 1) * DAY
    event_id = rows.ids["recent history"]
    with db.transaction() as session:
        more = [Event(user_id=rows.user_id, type=EventType.REWARD_EARNED, data={},
                      created_at=now) for _ in range(4)]  # fmt: skip
        session.add_all(more)
        session.flush()
        ids = [event_id, *(e.event_id for e in more)]
    old_delivered = add_delivery(ids[0], DeliveryStatus.DELIVERED, old)
    old_failed = add_delivery(ids[1], DeliveryStatus.FAILED, old)
    old_pending = add_delivery(ids[2], DeliveryStatus.PENDING, old)
    recent_delivered = add_delivery(ids[3], DeliveryStatus.DELIVERED, lately)
    recent_failed = add_delivery(ids[4], DeliveryStatus.FAILED, lately)

    assert retention.prune().webhook_deliveries == 2
    assert deliveries_left() == {old_pending, recent_delivered, recent_failed}
    assert {old_delivered, old_failed} & deliveries_left() == set()
    assert retention.prune().webhook_deliveries == 0
