"""The pure evaluator (questline.engine.evaluate), table by table, no database.

Expected numbers are worked out by hand from the rules in API.md v2 "Evaluation" and
v1 "Quest Processing"; none is produced by the code under test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from questline.engine import (
    MAX_COMPLETIONS_PER_EVENT,
    AttrValue,
    Condition,
    Effect,
    EvaluationError,
    EventIn,
    Measure,
    Operator,
    PeriodKind,
    PeriodState,
    QuestCompleted,
    QuestDef,
    QuestProgressed,
    QuestState,
    RewardEarned,
    RewardItem,
    Trigger,
    evaluate,
    fold,
    quest_view,
    sign_in,
)
from questline.engine.conditions import holds

T0 = datetime(2026, 6, 10, 12, tzinfo=UTC)  # a Wednesday, noon UTC
DAY = timedelta(days=1)
GOLD = (RewardItem("gold", 5),)
SEED = QuestDef(quest_id=1, target=3, duplication=2, rewards=(RewardItem("diamond", 10),))


def quest(quest_id: int = 1, **fields: Any) -> QuestDef:
    fields.setdefault("target", 3)
    fields.setdefault("rewards", GOLD)
    return QuestDef(quest_id=quest_id, **fields)


def event(
    n: int,
    at: datetime = T0,
    *,
    type: str = "sign_in",
    value: str | int = 1,
    attrs: Mapping[str, AttrValue] | None = None,
    tz: str = "UTC",
) -> EventIn:
    return EventIn(event_id=n, user_id=7, type=type, value=Decimal(value), attrs=attrs or {},
                   occurred_at=at, tz=tz)


def live(
    quests: Sequence[QuestDef], events: Sequence[EventIn], states: Mapping[int, QuestState] = {}
) -> tuple[dict[int, QuestState], list[list[Effect]]]:
    """Apply events one by one in the given order, as the worker does."""
    current = dict(states)
    per_event: list[list[Effect]] = []
    for e in events:
        outcome = evaluate(quests, current, e)
        current.update(outcome.states)
        per_event.append(outcome.effects)
    return current, per_event


def history(effects: Sequence[Effect]) -> list[str]:
    return [effect.history_type for effect in effects]


def completions(states: Mapping[int, QuestState], quest_id: int = 1) -> int:
    return states.get(quest_id, QuestState()).completions


# ---------------------------------------------------------------- the seed quest is v1

# v1: each sign-in adds 1 to curr_streak; at 3 one completion and curr_streak 0; at 2
# completions nothing more happens.
SEED_TABLE = [(0, 0, 0), (1, 1, 0), (2, 2, 0), (3, 0, 1), (4, 1, 1), (5, 2, 1), (6, 0, 2),
              (7, 0, 2), (10, 0, 2)]


@pytest.mark.parametrize(("sign_ins", "curr_streak", "done"), SEED_TABLE)
def test_the_seed_quest_counts_sign_ins_as_v1_did(
    sign_ins: int, curr_streak: int, done: int
) -> None:
    events = [sign_in(n, 7, T0 + n * DAY) for n in range(1, sign_ins + 1)]
    states, _ = live([SEED], events)
    state = states.get(1, QuestState())
    view = quest_view(SEED, state, now=T0 + 20 * DAY, user_tz="UTC")
    assert (view.curr_streak, state.completions) == (Decimal(curr_streak), done)


def test_the_seed_quest_records_v1_history_for_each_sign_in() -> None:
    events = [sign_in(n, 7, T0 + n * timedelta(minutes=1)) for n in range(1, 8)]
    _, per_event = live([SEED], events)
    progress_only = ["quest_progress"]
    completing = ["quest_progress", "quest_completed", "reward_earned"]
    assert [history(e) for e in per_event] == [
        progress_only, progress_only, completing, progress_only, progress_only, completing, []
    ]
    progressed = [e[0] for e in per_event if e]
    assert all(isinstance(p, QuestProgressed) for p in progressed)
    # v1's quest_progress carried curr_streak after the +1: 1, 2, 3, 1, 2, 3.
    assert [p.reached for p in progressed if isinstance(p, QuestProgressed)] == [1, 2, 3, 1, 2, 3]
    assert [p.progress for p in progressed if isinstance(p, QuestProgressed)] == [1, 2, 0, 1, 2, 0]
    rewards = [e for effects in per_event for e in effects if isinstance(e, RewardEarned)]
    assert [(r.completion_no, r.items, r.auto_claim) for r in rewards] == [
        (1, (RewardItem("diamond", 10),), False),
        (2, (RewardItem("diamond", 10),), False),
    ]


def test_a_lowered_target_completes_a_count_once_per_event_and_starts_again_at_zero() -> None:
    # v1 rule 2 after an admin lowered streak 3 -> 1 with curr_streak 1: the next sign-in
    # makes it 2, which reaches 1: one completion, curr_streak 0; the one after, one more.
    before = {1: QuestState(periods={"": PeriodState(Decimal(1), 0)})}
    lowered = replace(SEED, target=1, duplication=4)
    states, per_event = live([lowered], [sign_in(1, 7, T0), sign_in(2, 7, T0 + DAY)], before)
    assert (states[1].completions, states[1].period("").progress) == (2, Decimal(0))
    assert [history(e).count("reward_earned") for e in per_event] == [1, 1]


def test_a_sign_in_is_an_event_of_type_sign_in_worth_one() -> None:
    e = sign_in(3, 7, T0, "Asia/Kathmandu")
    assert (e.type, e.value, dict(e.attrs), e.occurred_at, e.tz) == (
        "sign_in", Decimal(1), {}, T0, "Asia/Kathmandu"
    )


# ---------------------------------------------------------------- conditions

C = Condition
EQ, IN, GTE, LTE, NE = Operator.EQ, Operator.IN, Operator.GTE, Operator.LTE, Operator.NE

CONDITIONS = [
    (C("mode", EQ, "ranked"), {"mode": "ranked"}, True),
    (C("mode", EQ, "ranked"), {"mode": "casual"}, False),
    (C("mode", EQ, "ranked"), {}, False),
    (C("won", EQ, True), {"won": True}, True),
    (C("won", EQ, True), {"won": 1}, False),  # a number is not a boolean
    (C("level", EQ, 1), {"level": True}, False),  # nor a boolean a number
    (C("level", EQ, 1), {"level": "1"}, False),  # nor a string a number
    (C("level", EQ, 1), {"level": 1.0}, True),  # numbers compare by value
    (C("mode", IN, ("ranked", "arena")), {"mode": "arena"}, True),
    (C("mode", IN, ("ranked", "arena")), {"mode": "casual"}, False),
    (C("level", IN, (1, 2)), {"level": True}, False),
    (C("mode", IN, ("ranked",)), {}, False),
    (C("score", GTE, 10), {"score": 10}, True),
    (C("score", GTE, 10), {"score": 9.5}, False),
    (C("score", GTE, 10), {"score": 11}, True),
    (C("score", GTE, 10), {"score": "11"}, False),  # only numbers compare
    (C("score", GTE, 0), {"score": True}, False),
    (C("score", GTE, 10), {}, False),
    (C("score", LTE, 5), {"score": 5}, True),
    (C("score", LTE, 5), {"score": 5.1}, False),
    (C("score", LTE, 5.5), {"score": -3}, True),
    (C("mode", NE, "casual"), {"mode": "ranked"}, True),
    (C("mode", NE, "casual"), {"mode": "casual"}, False),
    (C("mode", NE, "casual"), {}, False),  # a missing attribute fails even `ne`
    (C("level", NE, 1), {"level": True}, True),  # True is not the number 1
    (C("level", NE, 1), {"level": 1.0}, False),
]


@pytest.mark.parametrize(("condition", "attrs", "expected"), CONDITIONS)
def test_conditions(condition: Condition, attrs: dict[str, AttrValue], expected: bool) -> None:
    assert holds(condition, attrs) is expected


def test_an_event_counts_only_with_the_trigger_type_and_every_condition() -> None:
    ranked_win = quest(trigger=Trigger("match_won", (C("mode", EQ, "ranked"),
                                                     C("kills", GTE, 3))), target=10)
    cases = [
        (event(1, type="match_won", attrs={"mode": "ranked", "kills": 5}), True),
        (event(2, type="match_won", attrs={"mode": "ranked", "kills": 2}), False),
        (event(3, type="match_won", attrs={"mode": "casual", "kills": 5}), False),
        (event(4, type="match_lost", attrs={"mode": "ranked", "kills": 5}), False),
        (event(5, type="match_won", attrs={"kills": 5}), False),
    ]
    for e, counted in cases:
        outcome = evaluate([ranked_win], {}, e)
        assert (1 in outcome.states) is counted, e
        assert bool(outcome.effects) is counted, e


# ---------------------------------------------------------------- count, sum, carry, caps

# (quest fields, event values in order) -> (progress left, completions, completions by event)
MEASURES = [
    pytest.param({"target": 3}, [1] * 7, 1, 2, [0, 0, 1, 0, 0, 1, 0], id="count"),
    pytest.param({"measure": Measure.SUM, "target": 10}, [4, 7], 1, 1, [0, 1], id="sum-carry"),
    pytest.param({"measure": Measure.SUM, "target": 10}, [25], 5, 2, [2], id="sum-twice-at-once"),
    pytest.param({"measure": Measure.SUM, "target": 1}, ["0.3", "0.3", "0.4"], 0, 1, [0, 0, 1],
                 id="sum-decimals-exact"),
    pytest.param({"measure": Measure.SUM, "target": 10}, ["9.99", "0.01", "0.02"], "0.02", 1,
                 [0, 1, 0], id="sum-cents"),
    pytest.param({"measure": Measure.SUM, "target": 10, "duplication": 1}, [25, 4], 15, 1,
                 [1, 0], id="sum-rest-stays-at-lifetime-cap"),
    pytest.param({"measure": Measure.SUM, "target": 5, "duplication": 3}, [12, 12], 9, 3,
                 [2, 1], id="sum-lifetime-cap-mid-event"),
    pytest.param({"measure": Measure.SUM, "target": 5, "period": PeriodKind.DAY,
                  "max_per_period": 2}, [17], 7, 2, [2], id="sum-period-cap"),
    pytest.param({"target": 2, "period": PeriodKind.DAY, "max_per_period": 1}, [1] * 5, 0, 1,
                 [0, 1, 0, 0, 0], id="count-period-cap"),
    pytest.param({"target": 2, "period": PeriodKind.DAY, "max_per_period": None}, [1] * 5, 1, 2,
                 [0, 1, 0, 1, 0], id="count-no-period-cap"),
    pytest.param({"target": 1, "duplication": 2}, [1] * 4, 0, 2, [1, 1, 0, 0],
                 id="count-lifetime-cap"),
]


@pytest.mark.parametrize(("fields", "values", "left", "done", "by_event"), MEASURES)
def test_count_and_sum(
    fields: dict[str, Any], values: list[str | int], left: str | int, done: int,
    by_event: list[int],
) -> None:
    q = quest(**fields)
    # All on one day (noon to noon + n minutes), so one period.
    events = [event(n, T0 + timedelta(minutes=n), value=v) for n, v in enumerate(values, 1)]
    states, per_event = live([q], events)
    key = "" if q.period is PeriodKind.NONE else "2026-06-10"
    assert states[1].period(key) == PeriodState(Decimal(left), done)
    assert states[1].completions == done
    assert [sum(isinstance(x, QuestCompleted) for x in e) for e in per_event] == by_event


def test_at_a_cap_the_event_changes_nothing_and_records_nothing() -> None:
    capped = quest(target=1, duplication=1)
    state = QuestState(completions=1, periods={"": PeriodState(Decimal(0), 1)})
    outcome = evaluate([capped], {1: state}, event(1))
    assert (outcome.states, outcome.effects) == ({}, [])

    daily = quest(target=1, period=PeriodKind.DAY, max_per_period=1)
    state = QuestState(completions=1, periods={"2026-06-10": PeriodState(Decimal(0), 1)})
    assert evaluate([daily], {1: state}, event(2)).effects == []
    next_day = evaluate([daily], {1: state}, event(3, T0 + DAY))
    assert next_day.states[1].completions == 2
    assert next_day.states[1].period("2026-06-11") == PeriodState(Decimal(0), 1)
    assert next_day.states[1].period("2026-06-10") == PeriodState(Decimal(0), 1)


def test_a_sum_event_worth_nothing_changes_nothing() -> None:
    q = quest(measure=Measure.SUM, target=10)
    outcome = evaluate([q], {}, event(1, value=0))
    assert (outcome.states, outcome.effects) == ({}, [])


def test_one_event_completing_a_quest_too_often_is_refused() -> None:
    q = quest(measure=Measure.SUM, target=1)
    fine = evaluate([q], {}, event(1, value=MAX_COMPLETIONS_PER_EVENT))
    assert fine.states[1].completions == MAX_COMPLETIONS_PER_EVENT
    with pytest.raises(EvaluationError, match="would complete quest 1 1001 times"):
        evaluate([q], {}, event(2, value=MAX_COMPLETIONS_PER_EVENT + 1))
    # Under a lifetime cap the same event is fine: only 5 completions are possible.
    capped = evaluate([replace(q, duplication=5)], {}, event(3, value=10**9))
    assert capped.states[1].completions == 5


def test_effects_carry_the_reward_bundle_and_its_claim_rules() -> None:
    bundle = (RewardItem("gold", 100), RewardItem("chest_epic", 1))
    q = quest(quest_id=4, target=1, rewards=bundle, auto_claim=True, claim_within_seconds=3600,
              period=PeriodKind.DAY, max_per_period=None)
    states = {4: QuestState(completions=2, periods={"2026-06-10": PeriodState(Decimal(0), 2)})}
    outcome = evaluate([q], states, event(1))
    assert outcome.effects == [
        QuestProgressed(4, "2026-06-10", Decimal(0), Decimal(1)),
        QuestCompleted(4, 3, "2026-06-10"),
        RewardEarned(4, 3, "2026-06-10", bundle, True, 3600),
    ]
    assert history(outcome.effects) == ["quest_progress", "quest_completed", "reward_earned"]


def test_quests_are_applied_in_quest_id_order_and_only_changed_ones_are_returned() -> None:
    quests = [quest(3, target=1), quest(1, target=5), quest(2, trigger=Trigger("other"))]
    outcome = evaluate(quests, {}, event(1))
    assert sorted(outcome.states) == [1, 3]
    assert [(e.history_type, e.quest_id) for e in outcome.effects] == [
        ("quest_progress", 1), ("quest_progress", 3), ("quest_completed", 3), ("reward_earned", 3)
    ]


def test_the_states_given_are_not_changed() -> None:
    before = {1: QuestState(completions=0, periods={"": PeriodState(Decimal(2), 0)})}
    outcome = evaluate([quest()], before, event(1))
    assert before == {1: QuestState(completions=0, periods={"": PeriodState(Decimal(2), 0)})}
    assert outcome.states[1] == QuestState(completions=1, periods={"": PeriodState(Decimal(0), 1)})


# ---------------------------------------------------------------- periods in zones, late events

def test_late_events_count_in_their_own_period() -> None:
    daily = quest(target=2, period=PeriodKind.DAY, max_per_period=1)
    day1, day2 = T0, T0 + DAY
    late = event(3, day1 + timedelta(hours=3))  # arrives after day 2's event
    states, per_event = live([daily], [event(1, day1), event(2, day2), late])
    assert states[1].period("2026-06-10") == PeriodState(Decimal(0), 1)
    assert states[1].period("2026-06-11") == PeriodState(Decimal(1), 0)
    assert history(per_event[2])[:2] == ["quest_progress", "quest_completed"]
    assert per_event[2][1] == QuestCompleted(1, 1, "2026-06-10")


# (quest zone, event's stamped zone, event instant) -> the period key of a daily quest
ZONE_CASES = [
    ("user", "Asia/Kathmandu", datetime(2026, 6, 10, 18, 15, tzinfo=UTC), "2026-06-11"),
    ("user", "Asia/Kathmandu", datetime(2026, 6, 10, 18, 14, tzinfo=UTC), "2026-06-10"),
    ("user", "UTC", datetime(2026, 6, 10, 18, 15, tzinfo=UTC), "2026-06-10"),
    ("user", "America/New_York", datetime(2026, 6, 11, 3, 59, tzinfo=UTC), "2026-06-10"),
    ("America/New_York", "Asia/Kathmandu", datetime(2026, 6, 11, 3, 59, tzinfo=UTC),
     "2026-06-10"),
    ("UTC", "America/New_York", datetime(2026, 6, 11, 3, 59, tzinfo=UTC), "2026-06-11"),
]


@pytest.mark.parametrize(("quest_zone", "event_zone", "at", "key"), ZONE_CASES)
def test_a_quest_counts_in_its_zone_or_the_events_own(
    quest_zone: str, event_zone: str, at: datetime, key: str
) -> None:
    daily = quest(target=5, period=PeriodKind.DAY, timezone=quest_zone)
    outcome = evaluate([daily], {}, event(1, at, tz=event_zone))
    assert list(outcome.states[1].periods) == [key]
    assert outcome.effects == [QuestProgressed(1, key, Decimal(1), Decimal(1))]


# ---------------------------------------------------------------- windows and requires

START, END = datetime(2026, 7, 1, tzinfo=UTC), datetime(2026, 8, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
WINDOW = [
    (START - US, False), (START, True), (END - US, True), (END, False),
]


@pytest.mark.parametrize(("at", "counted"), WINDOW)
def test_only_events_inside_the_window_count(at: datetime, counted: bool) -> None:
    season = quest(starts_at=START, ends_at=END)
    assert bool(evaluate([season], {}, event(1, at)).effects) is counted
    open_start = quest(ends_at=END)
    assert bool(evaluate([open_start], {}, event(1, at)).effects) is (at < END)
    open_end = quest(starts_at=START)
    assert bool(evaluate([open_end], {}, event(1, at)).effects) is (at >= START)


def test_requires_is_judged_on_the_states_before_the_event() -> None:
    first = quest(1, target=1, duplication=1)
    second = quest(2, target=1, requires=(1,))
    states, per_event = live([first, second], [event(1), event(2), event(3)])
    # Sign-in 1 completes quest 1 and does not also count for quest 2; sign-in 2 counts for 2.
    assert [{e.quest_id for e in effects} for effects in per_event] == [{1}, {2}, {2}]
    assert (states[1].completions, states[2].completions) == (1, 2)


def test_requires_needs_every_required_quest() -> None:
    chained = quest(3, target=1, requires=(1, 2))
    done = QuestState(completions=1)
    assert evaluate([chained], {1: done}, event(1)).effects == []
    assert evaluate([chained], {2: done}, event(1)).effects == []
    assert evaluate([chained], {1: done, 2: done}, event(1)).states[3].completions == 1


# ---------------------------------------------------------------- consecutive

def days(*numbers: int) -> list[EventIn]:
    """One event at noon UTC on each day number (day 0 = 2026-06-10), in that order."""
    return [event(n + 100, T0 + d * DAY) for n, d in enumerate(numbers)]


# (target, grace, duplication, days in arrival order)
#   -> (completions, best, what runs earned, the days kept as qualifying)
STREAKS = [
    pytest.param(3, 0, None, [0, 1, 2], 1, 3, 1, [0, 1, 2],
                 id="three-in-a-row"),
    pytest.param(3, 0, None, [0, 1, 3, 4], 0, 2, 0, [0, 1, 3, 4],
                 id="broken"),
    pytest.param(3, 1, None, [0, 1, 3], 1, 3, 1, [0, 1, 3],
                 id="one-grace-day"),
    pytest.param(3, 1, None, [0, 1, 4], 0, 2, 0, [0, 1, 4],
                 id="gap-wider-than-grace"),
    pytest.param(3, 2, None, [0, 3, 6], 1, 3, 1, [0, 3, 6],
                 id="two-grace-days-twice"),
    pytest.param(2, 0, None, [0, 1, 2, 3], 2, 4, 2, [0, 1, 2, 3],
                 id="repeats"),
    # At the lifetime cap later days are ignored altogether (no change, no effect).
    pytest.param(2, 0, 1, [0, 1, 2, 3], 1, 2, 1, [0, 1],
                 id="lifetime-cap"),
    pytest.param(3, 0, None, [0, 2, 1], 1, 3, 1, [0, 1, 2],
                 id="late-day-joins-runs"),
    pytest.param(2, 0, None, [0, 1, 3, 4, 2], 2, 5, 2, [0, 1, 2, 3, 4],
                 id="merge-earns-nothing-new"),
    pytest.param(3, 0, None, [0, 1, 3, 4, 2], 1, 5, 1, [0, 1, 2, 3, 4],
                 id="merge-earns-one"),
    pytest.param(3, 0, None, [0, 0, 1, 1, 2], 1, 3, 1, [0, 1, 2],
                 id="same-day-twice"),
    pytest.param(7, 1, None, [0, 1, 2, 4, 5, 6, 8], 1, 7, 1, [0, 1, 2, 4, 5, 6, 8],
                 id="seven-day-one-grace"),
]


@pytest.mark.parametrize(
    ("target", "grace", "cap", "order", "done", "best", "earned", "kept"), STREAKS
)
def test_consecutive_periods(
    target: int, grace: int, cap: int | None, order: list[int], done: int, best: int,
    earned: int, kept: list[int],
) -> None:
    streak = quest(measure=Measure.CONSECUTIVE, period=PeriodKind.DAY, target=target,
                   grace_periods=grace, duplication=cap)
    states, per_event = live([streak], days(*order))
    state = states[1]
    assert (state.completions, state.best_streak, state.streak_completions) == (done, best, earned)
    assert state.streak_periods == tuple(T0.toordinal() + d for d in kept)
    assert state.periods == {}
    rewards = [e for effects in per_event for e in effects if isinstance(e, RewardEarned)]
    assert [r.completion_no for r in rewards] == list(range(1, done + 1))


def test_a_late_day_reports_the_run_it_joined_and_earns_in_its_own_period() -> None:
    streak = quest(measure=Measure.CONSECUTIVE, period=PeriodKind.DAY, target=3)
    _, per_event = live([streak], days(0, 2, 1))
    assert per_event[0] == [QuestProgressed(1, "2026-06-10", Decimal(1), Decimal(1))]
    assert per_event[1] == [QuestProgressed(1, "2026-06-12", Decimal(1), Decimal(1))]
    assert history(per_event[2]) == ["quest_progress", "quest_completed", "reward_earned"]
    assert per_event[2][0] == QuestProgressed(1, "2026-06-11", Decimal(3), Decimal(3))
    assert per_event[2][1] == QuestCompleted(1, 1, "2026-06-11")


def test_a_qualified_day_again_changes_nothing() -> None:
    streak = quest(measure=Measure.CONSECUTIVE, period=PeriodKind.DAY, target=3)
    states, _ = live([streak], days(0))
    again = evaluate([streak], states, event(9, T0 + timedelta(hours=5)))
    assert (again.states, again.effects) == ({}, [])


def test_raising_the_duplication_cap_grants_what_streaks_earned_beyond_it() -> None:
    capped = quest(measure=Measure.CONSECUTIVE, period=PeriodKind.DAY, target=1, duplication=2)
    states, _ = live([capped], days(0, 1))
    assert (states[1].completions, states[1].streak_completions) == (2, 2)
    raised = replace(capped, duplication=5)
    states, per_event = live([raised], days(2), states)
    assert (states[1].completions, states[1].streak_completions) == (3, 3)
    assert [e.completion_no for e in per_event[0] if isinstance(e, QuestCompleted)] == [3]


def test_weekly_streaks_count_weeks() -> None:
    weekly = quest(measure=Measure.CONSECUTIVE, period=PeriodKind.WEEK, target=2)
    # 2026-06-10 is a Wednesday; +5 days is Monday of the next week; +19 days two weeks on.
    states, _ = live([weekly], days(0, 1, 5, 19))
    assert (states[1].completions, states[1].best_streak) == (1, 2)
    assert len(states[1].streak_periods) == 3


# ---------------------------------------------------------------- fold and events

def test_fold_applies_events_in_occurred_at_then_event_id_order() -> None:
    first = quest(1, target=1, duplication=1)
    second = quest(2, target=1, requires=(1,))
    # Event 5 happened first although it arrives last; events 3 and 4 share an instant.
    events = [event(3, T0 + DAY), event(4, T0 + DAY), event(5, T0)]
    states, effects = fold([first, second], {}, events)
    assert (states[1].completions, states[2].completions) == (1, 2)
    assert [(e.history_type, e.quest_id) for e in effects if isinstance(e, QuestCompleted)] == [
        ("quest_completed", 1), ("quest_completed", 2), ("quest_completed", 2)
    ]
    untouched = QuestState(completions=4)
    assert fold([first], {9: untouched}, [])[0] == {9: untouched}


def test_fold_takes_one_users_events() -> None:
    other = EventIn(event_id=9, user_id=8, type="sign_in", occurred_at=T0)
    with pytest.raises(EvaluationError, match=re.escape("got users [7, 8]")):
        fold([quest()], {}, [event(1), other])


EVENT_ERRORS = [
    ({"occurred_at": datetime(2026, 6, 10, 12)}, "no UTC offset"),
    ({"tz": "Mars/Olympus"}, "'Mars/Olympus' is not an IANA time zone"),
    ({"value": Decimal(-1)}, "not in 0..10^9"),
    ({"value": Decimal(10**9 + 1)}, "not in 0..10^9"),
    ({"value": Decimal("NaN")}, "finite"),
]


@pytest.mark.parametrize(("fields", "message"), EVENT_ERRORS)
def test_an_event_the_evaluator_cannot_read_is_refused_when_built(
    fields: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"event_id": 1, "user_id": 7, "type": "x", "occurred_at": T0}
    with pytest.raises(EvaluationError, match=re.escape(message)):
        EventIn(**{**base, **fields})
