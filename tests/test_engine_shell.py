"""The engine's shell (questline.quests.rules.apply_inputs) on gameplay events, on real
PostgreSQL: quests of every shape written straight to the catalog tables, events stored
as ingestion stores them (tests/factories.add_events), applied by a real worker or by
the outbox's own entry points; duplicates, crashes, bad events and bad definitions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Event, EventType, LedgerEntry, UserQuestProgress
from questline import outbox
from questline.catalog import repository as catalog_repository
from questline.catalog.source import catalog_source
from questline.config import get_settings
from questline.infra import db
from questline.quests.rules import apply_inputs
from questline.wallet.repository import balances
from tests import factories as f
from tests import support
from tests.factories import GameEvent
from workers.publish import wake_drainer


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def new_user() -> int:
    with db.transaction() as s:
        return f.add_user(s).user_id


def store(user_id: int, events: list[GameEvent], *, away_from_sweeper: bool = False) -> list[int]:
    with db.transaction() as s:
        ids = f.add_events(s, user_id, events)
        if away_from_sweeper:
            f.keep_from_sweeper(s, ids)
    return ids


def quest(**columns: Any) -> int:
    with db.transaction() as s:
        return f.add_v2_quest(s, **columns).quest_id


def pending(event_ids: list[int]) -> list[int]:
    with db.transaction() as s:
        return list(
            s.scalars(
                select(Event.event_id).where(
                    Event.event_id.in_(event_ids), Event.processed_at.is_(None)
                )
            )
        )


def history(user_id: int, quest_id: int, *types: str) -> list[Event]:
    with db.transaction() as s:
        return [e for e in f.events(s, user_id, *types) if e.quest_id == quest_id]


def lifetime(user_id: int, quest_id: int) -> UserQuestProgress | None:
    with db.transaction() as s:
        return s.get(UserQuestProgress, (user_id, quest_id))


def periods(user_id: int, quest_id: int) -> dict[str, tuple[Decimal, int]]:
    with db.transaction() as s:
        return f.periods(s, user_id, quest_id)


def wallet(user_id: int) -> dict[str, int]:
    with db.transaction() as s:
        return balances(s, user_id)


def progress_of(user_id: int, quest_id: int) -> tuple[int, int]:
    """(progress of period "", completions)."""
    with db.transaction() as s:
        return f.progress(s, user_id, quest_id)


# --- quests of every shape, applied by a real worker -----------------------------------


@pytest.fixture(params=["database", "grpc"])
def catalog_worker(
    request: pytest.FixtureRequest, suite_worker: support.SuiteWorker
) -> Iterator[support.Process]:
    """A worker reading the catalog from the database, then (the same scenario once more)
    one reading it over gRPC from `questline grpc` (QUESTLINE_CATALOG_GRPC)."""
    if request.param == "database":
        yield suite_worker.running()
        return
    suite_worker.stop()  # the only worker on the test database reads over gRPC
    with support.start_grpc_server(name="grpc-engine") as server:
        target = server.target
        with support.worker_running(name="worker-grpc-engine", QUESTLINE_CATALOG_GRPC=target):
            yield server
        # It did read the catalog over gRPC: its watch streams end with it.
        support.wait_until(
            lambda: "/questline.v1.Catalog/WatchCatalog" in _grpc_metrics(server),
            30,
            "the worker's watch streams to be counted",
        )


def _grpc_metrics(server: support.harness.GrpcServer) -> str:
    return httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).text


@pytest.mark.usefixtures("catalog_worker")
def test_a_worker_applies_gameplay_events_to_quests_of_every_shape() -> None:
    # A daily quest reset at 04:00 in Kathmandu (+05:45: 22:15 UTC the day before),
    # once a day, paying a bundle at once.
    daily = quest(
        target=2,
        trigger={"event": "match_played"},
        period="day",
        reset_at="04:00",
        timezone="Asia/Kathmandu",
        max_per_period=1,
        auto_claim=True,
        items=(("gold", 5), ("chest_epic", 1)),
    )
    # Three ranked wins a week (UTC, Monday), once a week, claimed within an hour.
    ranked = quest(
        target=3,
        trigger={"event": "match_won", "where": {"mode": "ranked"}},
        period="week",
        timezone="UTC",
        max_per_period=1,
        claim_within_seconds=3600,
    )
    # 500 gold spent, ever, no limit.
    spender = quest(target=500, trigger={"event": "gold_spent"}, measure="sum")
    # A login streak of 3 days in the player's zone, one missed day forgiven.
    streak = quest(
        target=3,
        trigger={"event": "daily_login"},
        measure="consecutive",
        period="day",
        grace_periods=1,
    )
    user = new_user()
    ny = "America/New_York"
    events = [
        GameEvent("match_played", at("2026-03-02T10:00")),  # Kathmandu day 03-02
        GameEvent("match_played", at("2026-03-02T22:14")),  # 03-02: completes
        GameEvent("match_played", at("2026-03-02T22:15")),  # 03-03 from the reset on
        GameEvent("match_played", at("2026-03-02T23:00")),  # 03-03: completes
        GameEvent("match_played", at("2026-03-03T01:00")),  # 03-03: over the daily cap
        GameEvent("match_won", at("2026-03-02T12:00"), attrs={"mode": "ranked"}),
        GameEvent("match_won", at("2026-03-03T12:00"), attrs={"mode": "casual"}),
        GameEvent("match_won", at("2026-03-04T12:00"), attrs={"mode": "ranked"}),
        GameEvent("match_won", at("2026-03-05T12:00"), attrs={"mode": "ranked"}),
        GameEvent("match_won", at("2026-03-06T12:00"), attrs={"mode": "ranked"}),  # capped
        GameEvent("match_won", at("2026-03-09T00:00"), attrs={"mode": "ranked"}),  # next week
        GameEvent("match_won", at("2026-03-09T01:00")),  # no mode: the condition fails
        GameEvent("gold_spent", at("2026-03-02T12:00"), value="120.5"),
        GameEvent("gold_spent", at("2026-03-03T12:00"), value=400),
        GameEvent("gold_spent", at("2026-03-04T12:00"), value="479.5"),
        GameEvent("daily_login", at("2026-03-07T15:00"), tz=ny),  # 03-07 in New York
        GameEvent("daily_login", at("2026-03-07T20:00"), tz=ny),  # the same day again
        GameEvent("daily_login", at("2026-03-09T03:30"), tz=ny),  # 03-08 23:30 EDT
        GameEvent("daily_login", at("2026-03-10T16:00"), tz=ny),  # 03-10: 03-09 forgiven
        GameEvent("daily_login", at("2026-03-11T12:00"), tz=ny),
    ]
    ids = store(user, events)
    wake_drainer()
    support.wait_until(lambda: not pending(ids), 30, "the worker to apply the events")

    assert periods(user, daily) == {"2026-03-02": (0, 1), "2026-03-03": (0, 1)}
    daily_row = lifetime(user, daily)
    assert daily_row is not None
    assert daily_row.completions == 2
    assert wallet(user) == {"gold": 10, "diamond": 0, "chest_epic": 2}
    with db.transaction() as s:
        daily_rewards = f.rewards(s, user, daily)
        assert [(r.status, r.items) for r in daily_rewards] == [
            ("claimed", [{"item": "gold", "qty": 5}, {"item": "chest_epic", "qty": 1}])
        ] * 2
        sources = s.scalars(select(LedgerEntry.source).where(LedgerEntry.user_id == user))
        paid_by = {f"user_reward:{r.user_reward_id}" for r in daily_rewards}
        assert set(sources) == paid_by
    # The capped event recorded no quest event: four events counted, two completions.
    assert len(history(user, daily, EventType.QUEST_PROGRESS)) == 4
    assert len(history(user, daily, EventType.REWARD_CLAIMED)) == 2

    assert periods(user, ranked) == {"2026-03-02": (0, 1), "2026-03-09": (1, 0)}
    with db.transaction() as s:
        [ranked_reward] = f.rewards(s, user, ranked)
    assert ranked_reward.status == "not_claimed"
    assert ranked_reward.expires_at == ranked_reward.earned_at + timedelta(hours=1)
    progress = history(user, ranked, EventType.QUEST_PROGRESS)
    assert len(progress) == 4  # three in the first week, one in the next
    assert {e.data["period_key"] for e in progress} == {"2026-03-02", "2026-03-09"}
    assert all(set(e.data) == {"event_id", "period_key", "progress"} for e in progress)

    assert periods(user, spender) == {"": (Decimal("0.000000"), 2)}  # 1000 = 2 x 500

    streak_row = lifetime(user, streak)
    assert streak_row is not None
    days = [date(2026, 3, d).toordinal() for d in (7, 8, 10, 11)]
    assert (streak_row.completions, streak_row.best_streak, streak_row.streak_periods) == (
        1,
        4,
        days,
    )
    assert periods(user, streak) == {}  # streaks keep periods on the lifetime row
    # The second login of 03-07 changed nothing and recorded nothing.
    assert len(history(user, streak, EventType.QUEST_PROGRESS)) == 4


# --- order, carry and caps within one batch -----------------------------------------------


def test_a_sum_quest_carries_the_rest_and_keeps_it_at_the_lifetime_cap(session: Session) -> None:
    spender = f.add_v2_quest(
        session, target=100, trigger={"event": "gold_spent"}, measure="sum", duplication=2
    ).quest_id
    user = f.add_user(session).user_id
    ids = f.add_events(
        session,
        user,
        [
            GameEvent("gold_spent", at("2026-03-02T10:00"), value=60),
            GameEvent("gold_spent", at("2026-03-02T11:00"), value="40.25"),  # 100.25: done
            GameEvent("gold_spent", at("2026-03-02T12:00"), value=120),  # 120.25: done, cap
            GameEvent("gold_spent", at("2026-03-02T13:00"), value=30),  # ignored at the cap
        ],
    )

    applied = apply_inputs(session, event_ids=ids)

    assert applied.inputs == ids
    assert applied.rewards_earned == 2
    assert f.periods(session, user, spender) == {"": (Decimal("20.25"), 2)}
    progress = [e.data for e in f.events(session, user, "quest_progress")]
    assert progress == [
        {"event_id": ids[0], "period_key": "", "progress": 60},
        {"event_id": ids[1], "period_key": "", "progress": 100.25},
        {"event_id": ids[2], "period_key": "", "progress": 120.25},
    ]
    earned = [e.data for e in f.events(session, user, "reward_earned")]
    assert [(d["event_id"], d["completion_no"], d["reward_qty"]) for d in earned] == [
        (ids[1], 1, 5),
        (ids[2], 2, 5),
    ]
    assert [d["user_reward_id"] for d in earned] == [
        r.user_reward_id for r in f.rewards(session, user, spender)
    ]


def test_a_quest_counts_only_once_the_quest_it_requires_is_completed(session: Session) -> None:
    first = f.add_v2_quest(session, target=2, trigger={"event": "tutorial_step"}).quest_id
    second = f.add_v2_quest(
        session, target=1, trigger={"event": "match_won"}, requires=[first]
    ).quest_id
    user = f.add_user(session).user_id
    t = at("2026-03-02T10:00")
    won_early, *_ = ids = f.add_events(
        session,
        user,
        [
            GameEvent("match_won", t),  # too early: the tutorial is not done
            GameEvent("tutorial_step", t),
            GameEvent("tutorial_step", t),  # completes the tutorial
            GameEvent("match_won", t),  # counts
        ],
    )

    apply_inputs(session, event_ids=ids)

    assert f.progress(session, user, first) == (0, 1)
    assert f.progress(session, user, second) == (0, 1)
    assert [e.data["event_id"] for e in f.events(session, user, "quest_completed")] == [
        ids[2],
        ids[3],
    ]
    assert won_early not in {e.data.get("event_id") for e in f.events(session, user)}

    # Alone in its batch, a later win reads the tutorial's row without locking it.
    later = f.add_events(session, user, [GameEvent("match_won", t)])
    apply_inputs(session, event_ids=later)
    assert f.progress(session, user, second) == (0, 2)


def test_events_outside_a_quest_s_window_do_not_count(session: Session) -> None:
    season = f.add_v2_quest(
        session,
        target=1,
        trigger={"event": "match_won"},
        starts_at=at("2026-03-01T00:00"),
        ends_at=at("2026-04-01T00:00"),
        duplication=5,
    ).quest_id
    user = f.add_user(session).user_id
    ids = f.add_events(
        session,
        user,
        [
            GameEvent("match_won", at("2026-02-28T23:59")),
            GameEvent("match_won", at("2026-03-01T00:00")),
            GameEvent("match_won", at("2026-03-31T23:59")),
            GameEvent("match_won", at("2026-04-01T00:00")),
        ],
    )
    apply_inputs(session, event_ids=ids)
    assert f.progress(session, user, season) == (0, 2)


# --- exactly once ---------------------------------------------------------------------------


class Crash(Exception):
    """The worker dies after its work and before COMMIT."""


@pytest.mark.usefixtures("worker")
def test_gameplay_events_are_applied_once_despite_duplicates_and_a_crashed_batch() -> None:
    from workers.tasks import process_sign_in

    counter = quest(
        target=2, trigger={"event": "match_won"}, auto_claim=True, items=(("gem", 3),)
    )
    user = new_user()
    start = at("2026-03-02T10:00")
    events = [GameEvent("match_won", start + timedelta(minutes=i)) for i in range(7)]
    ids = store(user, events, away_from_sweeper=True)

    # A batch does all its work, then its process dies before COMMIT: nothing sticks.
    def crashing_batch() -> None:
        with db.transaction() as s:
            assert apply_inputs(s, event_ids=ids).inputs == ids
            s.flush()
            raise Crash

    with pytest.raises(Crash):
        crashing_batch()
    assert pending(ids) == ids
    assert "gem" not in wallet(user)

    # Every event delivered three times to the real worker, all at once.
    for _ in range(3):
        for event_id in ids:
            process_sign_in.apply_async((event_id,), {"user_id": user})
    support.wait_until(lambda: not pending(ids), 30, "the worker to apply the events")
    # ... and once more by hand after they were applied.
    assert all(outbox.process_sign_in(e).inputs == [] for e in ids)

    assert progress_of(user, counter) == (1, 3)  # 7 wins: 3 completions, 1 carried
    assert wallet(user)["gem"] == 9
    assert len(history(user, counter, EventType.QUEST_PROGRESS)) == 7
    assert len(history(user, counter, EventType.REWARD_EARNED)) == 3
    with db.transaction() as s:
        ledger = s.scalar(select(func.count()).where(LedgerEntry.user_id == user))
    assert ledger == 3


# --- bad events and bad definitions fail alone ----------------------------------------------


def drain_until_dead(event_id: int) -> Event:
    """Drain (the sweeper's path) until the event is dead-lettered; it is counted once per
    drain (a running worker's sweeper may count some attempts too)."""
    for _ in range(get_settings().max_attempts * 3):
        outbox.drain()
        with db.transaction() as s:
            event = s.get_one(Event, event_id)
            if event.dead_at is not None:
                return event
    raise AssertionError(f"event {event_id} was never dead-lettered")


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (
            GameEvent("match_won", at("2026-03-02T10:00"), tz="Mars/Olympus"),
            "time zone 'Mars/Olympus' is not an IANA time zone",
        ),
        (
            GameEvent("coins_earned", at("2026-03-02T10:00"), value=10**9),
            "would complete quest",
        ),
        (
            GameEvent("match_won", at("2026-03-02T10:00"), attrs={"mode": ["ranked"]}),
            "attribute 'mode' is not a string, number or boolean",
        ),
    ],
)
def test_an_event_the_engine_cannot_apply_is_dead_lettered_alone(
    bad: GameEvent, error: str
) -> None:
    won = quest(target=1, trigger={"event": "match_won"}, duplication=None)
    # A definition mistake: a target far below the values the game sends.
    coins = quest(target=1, trigger={"event": "coins_earned"}, measure="sum")
    victim, bystander = new_user(), new_user()
    fine = at("2026-03-02T09:00")
    store(bystander, [GameEvent("match_won", fine), GameEvent("coins_earned", fine, value=5)])
    [poison] = store(victim, [bad])
    after = store(bystander, [GameEvent("match_won", fine)])  # stored after the poison
    with db.transaction() as s:
        [sign_in] = f.add_sign_ins(s, victim)

    dead = drain_until_dead(poison)

    assert dead.processed_at is None
    assert dead.attempts == get_settings().max_attempts
    assert dead.last_error is not None
    assert dead.last_error.startswith("EvaluationError: event ")
    assert error in dead.last_error
    assert pending([*after, sign_in]) == []  # nobody else waited for the poison
    assert progress_of(bystander, won) == (0, 2)
    assert progress_of(bystander, coins) == (0, 5)
    assert progress_of(victim, 1) == (1, 0)  # the victim's own sign-in went through
    assert outbox.stats().dead == 1


def test_a_quest_whose_stored_definition_is_invalid_fails_only_the_events_it_could_count() -> None:
    broken = quest(
        target=1, trigger={"event": "boss_killed", "where": {"hp": {"between": [1, 9]}}}
    )
    fine = quest(target=1, trigger={"event": "match_won"}, duplication=None)
    user = new_user()
    t = at("2026-03-02T10:00")
    [boss] = store(user, [GameEvent("boss_killed", t)])
    others = store(user, [GameEvent("match_won", t)])
    with db.transaction() as s:
        others += f.add_sign_ins(s, user)

    dead = drain_until_dead(boss)

    assert dead.last_error is not None
    assert f"quest {broken} is invalid: trigger.where.hp: unknown operator 'between'" in (
        dead.last_error
    )
    assert pending(others) == []
    assert progress_of(user, fine) == (0, 1)
    assert progress_of(user, 1) == (1, 0)
    with db.transaction() as s:
        assert s.get(UserQuestProgress, (user, broken)) is None


# --- the catalog source ----------------------------------------------------------------------


def test_the_catalog_copy_is_kept_until_the_version_moves(session: Session) -> None:
    source = catalog_source()
    first = source.current(session)
    assert source.current(session) is first  # same version: no reload
    assert [q.quest_id for q in first.quests] == [1]
    added = f.add_v2_quest(session, target=4, trigger={"event": "match_won"}).quest_id
    second = source.current(session)
    assert second.version == first.version + 1
    assert [q.quest_id for q in second.quests] == [1, added]
    assert [q.quest_id for q in second.triggered_by("match_won")] == [added]
    assert [q.quest_id for q in second.triggered_by("sign_in")] == [1]
    session.rollback()
    # The bump was rolled back; a new one reaches the same number with other contents.
    with db.transaction() as s:
        f.catalog_changed(s)
    with db.transaction() as s:
        third = source.current(s)
    assert third.version == second.version
    assert [q.quest_id for q in third.quests] == [1]


@pytest.fixture
def applying() -> Iterator[Session]:
    """A transaction in the middle of applying inputs: it has read the catalog."""
    with db.session_factory()() as s:
        catalog_source().current(s)
        yield s
        s.rollback()


def test_a_catalog_write_waits_for_a_grant_in_progress(applying: Session) -> None:
    with db.session_factory()() as writer:
        writer.execute(sa.text("SET LOCAL lock_timeout = '100ms'"))
        with pytest.raises(sa.exc.OperationalError, match="lock timeout"):
            catalog_repository.bump_version(writer)
        writer.rollback()
    applying.rollback()  # the grant commits (or not): the write goes through
    with db.transaction() as writer:
        catalog_repository.bump_version(writer)
