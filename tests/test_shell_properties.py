"""Hypothesis properties of the engine's shell on real PostgreSQL.

Random gameplay events (types, values, attributes, zones, times across DST changes)
are stored as inputs and applied by questline.quests.rules.apply_inputs in random
batches, with duplicate deliveries and crashed batches mixed in. Afterwards the stored
state of every quest equals engine.fold of the same events (from definitions parsed
independently of the shell's catalog), rewards equal completions, caps hold, and the
wallet equals the sum of the claimed bundles.

Without caps the outcome does not depend on order, so events arrive in any order (late
ones included). With caps it does, so there they arrive in occurred_at order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from models import LedgerEntry, UserQuestProgress
from questline.engine import (
    Measure,
    PeriodState,
    QuestCompleted,
    QuestDef,
    QuestProgressed,
    QuestState,
    fold,
    parse_quest,
)
from questline.infra import db
from questline.quests.repository import processed_inputs
from questline.quests.rules import apply_inputs, event_in
from questline.wallet.repository import balances
from tests import factories as f
from tests.factories import GameEvent

START = datetime(2026, 3, 3, tzinfo=UTC)  # ten days across New York's spring forward
ZONES = ["UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe"]

UNCAPPED = [
    {"target": 2, "trigger": {"event": "play", "where": {"mode": "ranked"}}, "period": "day",
     "max_per_period": None, "auto_claim": True, "rewards": [{"item": "gold", "qty": 3}]},
    {"target": 10, "trigger": {"event": "score"}, "measure": "sum",
     "rewards": [{"item": "diamond", "qty": 1}]},
    {"target": 2, "trigger": {"event": "play"}, "measure": "consecutive", "period": "day",
     "grace_periods": 1, "auto_claim": True,
     "rewards": [{"item": "gem", "qty": 1}, {"item": "gold", "qty": 1}]},
    {"target": 3, "trigger": {"event": "score", "where": {"level": {"gte": 5}}},
     "period": "week", "timezone": "Asia/Kathmandu", "reset_at": "04:00",
     "max_per_period": None, "auto_claim": True, "rewards": [{"item": "coins", "qty": 7}]},
]
CAPPED = [
    {"target": 2, "trigger": {"event": "play"}, "period": "day", "timezone": "UTC",
     "max_per_period": 1, "auto_claim": True, "rewards": [{"item": "gold", "qty": 3}]},
    {"target": 10, "trigger": {"event": "score"}, "measure": "sum", "duplication": 3,
     "rewards": [{"item": "diamond", "qty": 1}]},
    {"target": 2, "trigger": {"event": "play"}, "measure": "consecutive", "period": "day",
     "duplication": 2, "auto_claim": True, "rewards": [{"item": "gem", "qty": 2}]},
    {"target": 4, "trigger": {"event": "score"}, "measure": "sum", "period": "week",
     "max_per_period": 2, "duplication": 5, "auto_claim": True,
     "rewards": [{"item": "coins", "qty": 7}, {"item": "gold", "qty": 1}]},
]


def create(specs: list[dict[str, Any]]) -> list[QuestDef]:
    """Store the quests and parse the same specs with the engine, independently of the
    shell's catalog conversion."""
    defs = []
    with db.transaction() as s:
        for spec in specs:
            columns = {k: v for k, v in spec.items() if k not in {"target", "trigger", "rewards"}}
            quest = f.add_v2_quest(
                s,
                target=spec["target"],
                trigger=spec["trigger"],
                items=[(r["item"], r["qty"]) for r in spec["rewards"]],
                **columns,
            )
            defs.append(parse_quest({**spec, "quest_id": quest.quest_id}))
    return defs


@pytest.fixture
def uncapped() -> list[QuestDef]:
    return create(UNCAPPED)


@pytest.fixture
def capped() -> list[QuestDef]:
    return create(CAPPED)


@st.composite
def game_events(draw: st.DrawFn) -> GameEvent:
    kind = draw(st.sampled_from(["play", "score"]))
    attrs: dict[str, Any] = {}
    if kind == "play" and draw(st.booleans()):
        attrs["mode"] = draw(st.sampled_from(["ranked", "casual"]))
    if kind == "score" and draw(st.booleans()):
        attrs["level"] = draw(st.integers(0, 9))
    value = draw(st.decimals(0, 25, places=2)) if kind == "score" else Decimal(1)
    return GameEvent(
        kind,
        START + timedelta(minutes=draw(st.integers(0, 10 * 24 * 60))),
        value=value,
        attrs=attrs,
        tz=draw(st.sampled_from(ZONES)),
    )


@dataclass
class Delivery:
    """How the stored events reach the shell: batch sizes, and faults along the way."""

    batch_sizes: list[int]
    duplicate_after: list[bool]
    crash_first: list[bool]


deliveries = st.builds(
    Delivery,
    batch_sizes=st.lists(st.integers(1, 8), min_size=1, max_size=30),
    duplicate_after=st.lists(st.booleans(), min_size=30, max_size=30),
    crash_first=st.lists(st.booleans(), min_size=30, max_size=30),
)


class Crash(Exception):
    """The worker dies before COMMIT."""


def deliver(event_ids: list[int], delivery: Delivery) -> None:
    """Apply the events in event_id order, in batches, each in its own transaction; a
    batch may crash before COMMIT first, and may be delivered again after it."""
    left, n = list(event_ids), 0
    while left:
        size = delivery.batch_sizes[n % len(delivery.batch_sizes)]
        batch, left = left[:size], left[size:]
        if delivery.crash_first[n % 30]:
            try:
                with db.transaction() as s:
                    apply_inputs(s, event_ids=batch)
                    s.flush()
                    raise Crash
            except Crash:
                pass
        with db.transaction() as s:
            assert apply_inputs(s, event_ids=batch).inputs == batch
        if delivery.duplicate_after[n % 30]:
            with db.transaction() as s:
                assert apply_inputs(s, event_ids=batch).inputs == []
        n += 1


def check_against_fold(quests: list[QuestDef], user_id: int, event_ids: list[int]) -> None:
    with db.transaction() as s:
        stored_inputs = processed_inputs(s, user_id, types={"play", "score"})
        assert sorted(row.event_id for row in stored_inputs) == sorted(event_ids)
        states, effects = fold(quests, {}, [event_in(row) for row in stored_inputs])
        wallet_from_bundles: Counter[str] = Counter()
        for quest in quests:
            expected = states.get(quest.quest_id, QuestState())
            row = s.get(UserQuestProgress, (user_id, quest.quest_id))
            periods = {
                key: PeriodState(progress, completions)
                for key, (progress, completions) in f.periods(s, user_id, quest.quest_id).items()
            }
            stored = QuestState(
                completions=row.completions if row else 0,
                best_streak=row.best_streak if row else 0,
                streak_periods=tuple(row.streak_periods) if row else (),
                streak_completions=row.streak_completions if row else 0,
                periods=periods,
            )
            assert stored == expected, quest

            rewards = f.rewards(s, user_id, quest.quest_id)
            assert [r.completion_no for r in rewards] == list(range(1, stored.completions + 1))
            if quest.duplication is not None:
                assert stored.completions <= quest.duplication
            if quest.max_per_period is not None and quest.measure is not Measure.CONSECUTIVE:
                assert all(p.completions <= quest.max_per_period for p in periods.values())
            for r in rewards:
                assert r.status == ("claimed" if quest.auto_claim else "not_claimed")
                assert r.items == [{"item": i.item, "qty": i.qty} for i in quest.rewards]
                if r.status == "claimed":
                    wallet_from_bundles.update({i["item"]: i["qty"] for i in r.items})
            kinds = Counter(type(e) for e in effects if e.quest_id == quest.quest_id)
            history = Counter(e.type for e in f.events(s, user_id) if e.quest_id == quest.quest_id)
            assert history["quest_progress"] == kinds[QuestProgressed]
            assert history["quest_completed"] == kinds[QuestCompleted] == stored.completions
        held = {k: v for k, v in balances(s, user_id).items() if v}
        assert held == dict(wallet_from_bundles)
        ledger: Counter[str] = Counter()
        for entry in s.scalars(select(LedgerEntry).where(LedgerEntry.user_id == user_id)):
            ledger[entry.item] += entry.qty
        assert ledger == wallet_from_bundles


PROPERTY = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(events=st.lists(game_events(), min_size=1, max_size=25), delivery=deliveries)
def test_without_caps_any_arrival_order_gives_the_fold_of_the_events(
    uncapped: list[QuestDef], events: list[GameEvent], delivery: Delivery
) -> None:
    with db.transaction() as s:
        user_id = f.add_user(s).user_id
        ids = f.add_events(s, user_id, events)  # arrival order: as drawn
        f.keep_from_sweeper(s, ids)
    deliver(ids, delivery)
    check_against_fold(uncapped, user_id, ids)


@PROPERTY
@given(events=st.lists(game_events(), min_size=1, max_size=25), delivery=deliveries)
def test_with_caps_events_in_time_order_give_the_fold_and_never_pass_a_cap(
    capped: list[QuestDef], events: list[GameEvent], delivery: Delivery
) -> None:
    with db.transaction() as s:
        user_id = f.add_user(s).user_id
        ids = f.add_events(s, user_id, sorted(events, key=lambda e: e.occurred_at))
        f.keep_from_sweeper(s, ids)
    deliver(ids, delivery)
    check_against_fold(capped, user_id, ids)

