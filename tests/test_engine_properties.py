"""Properties of the evaluator over generated quests and events (Hypothesis), no database.

- Without `requires` and without caps, every arrival order gives the same states, and
  that is what recompute (fold in occurred_at order) gives.
- Recompute equals live processing in occurred_at order, caps and requires included.
- Caps are never exceeded; completions never decrease, whether events are applied one by
  one or added to a history that is recomputed.
- One reward per completion, numbered 1, 2, ... with no gap.
- An event counts for a quest only when its requirements were met before the event.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from questline.engine import (
    Condition,
    Effect,
    EventIn,
    Measure,
    Operator,
    PeriodKind,
    QuestCompleted,
    QuestDef,
    QuestProgressed,
    QuestState,
    RewardEarned,
    RewardItem,
    Trigger,
    Weekday,
    evaluate,
    fold,
)

# Events span 2026-03-05 .. 2026-04-14: New York and London spring forward inside it,
# Lord Howe falls back; months and weeks turn over.
BASE = datetime(2026, 3, 5, tzinfo=UTC)
SPAN_MINUTES = 40 * 24 * 60
ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Kathmandu"]
TYPES = ["sign_in", "match_won"]
CONDITIONS: list[tuple[Condition, ...]] = [
    (),
    (),
    (Condition("mode", Operator.EQ, "ranked"),),
    (Condition("score", Operator.GTE, 1),),
    (Condition("mode", Operator.NE, "casual"), Condition("score", Operator.LTE, 3)),
]
RESETS = [time(0, 0), time(1, 30), time(2, 30), time(4, 0), time(23, 45)]
GOLD = (RewardItem("gold", 5),)
PROPERTY = settings(max_examples=150, deadline=None)


@st.composite
def quest_defs(
    draw: st.DrawFn, *, caps: bool = False, requires: bool = False
) -> list[QuestDef]:
    quests: list[QuestDef] = []
    for quest_id in range(1, draw(st.integers(1, 3)) + 1):
        measure = draw(st.sampled_from(list(Measure)))
        kinds = list(PeriodKind)[1:] if measure is Measure.CONSECUTIVE else list(PeriodKind)
        # Mostly no window, else a wide one, so that quests get far enough to complete.
        window = draw(st.sampled_from(["none", "none", "none", "start", "end", "both"]))
        starts_at = ends_at = None
        if window in ("start", "both"):
            starts_at = BASE + timedelta(minutes=draw(st.integers(0, SPAN_MINUTES // 4)))
        if window in ("end", "both"):
            ends_at = BASE + timedelta(minutes=draw(st.integers(SPAN_MINUTES // 2,
                                                                SPAN_MINUTES)))
        earlier = list(range(1, quest_id))
        quests.append(QuestDef(
            quest_id=quest_id,
            target=draw(st.integers(1, 3)),
            rewards=GOLD,
            trigger=Trigger(draw(st.sampled_from(TYPES)), draw(st.sampled_from(CONDITIONS))),
            measure=measure,
            period=draw(st.sampled_from(kinds)),
            reset_at=draw(st.sampled_from(RESETS)),
            week_starts_on=draw(st.sampled_from(list(Weekday))),
            timezone=draw(st.sampled_from(["user", *ZONES])),
            grace_periods=draw(st.integers(0, 2)) if measure is Measure.CONSECUTIVE else 0,
            max_per_period=draw(st.none() | st.integers(1, 2)) if caps else None,
            duplication=draw(st.none() | st.integers(1, 3)) if caps else None,
            requires=tuple(draw(st.sets(st.sampled_from(earlier), max_size=2)))
            if requires and earlier else (),
            starts_at=starts_at,
            ends_at=ends_at,
            auto_claim=draw(st.booleans()),
        ))
    return quests


@st.composite
def histories(draw: st.DrawFn, *, max_size: int = 30) -> list[EventIn]:
    """One user's events, in an arbitrary arrival order."""
    count = draw(st.sampled_from([0, 1, 3, max_size // 2, max_size]) | st.integers(0, max_size))
    # Over an hour (ties on occurred_at happen), a few days (streaks), or all 40 days.
    days = draw(st.sampled_from([0, 4, 10, 40]))
    minutes = draw(st.sampled_from([60, 24 * 60]))
    events = []
    for event_id in range(1, count + 1):
        attrs: dict[str, str | int | float | bool] = {}
        if draw(st.integers(0, 3)):  # mostly present, mostly matching
            attrs["mode"] = draw(st.sampled_from(["ranked", "ranked", "casual"]))
        if draw(st.integers(0, 3)):
            scores: list[str | int | float | bool] = [0, 1, 2, 3, 4, 2.5, True, "2"]
            attrs["score"] = draw(st.sampled_from(scores))
        events.append(EventIn(
            event_id=event_id,
            user_id=1,
            type=draw(st.sampled_from(TYPES)),
            value=draw(st.sampled_from([Decimal(0), Decimal(1), Decimal("2.5"), Decimal(3),
                                        Decimal("0.1"), Decimal(7)])),
            attrs=attrs,
            occurred_at=BASE + timedelta(days=draw(st.integers(0, days)),
                                         minutes=draw(st.integers(0, minutes)),
                                         microseconds=draw(st.integers(0, 1))),
            tz=draw(st.sampled_from(ZONES)),
        ))
    return draw(st.permutations(events))


def live(
    quests: Sequence[QuestDef], events: Sequence[EventIn]
) -> tuple[dict[int, QuestState], list[tuple[dict[int, QuestState], list[Effect]]]]:
    """Apply events one by one in arrival order, as the worker does; keep each step."""
    current: dict[int, QuestState] = {}
    steps: list[tuple[dict[int, QuestState], list[Effect]]] = []
    for event in events:
        before = dict(current)
        outcome = evaluate(quests, current, event)
        current.update(outcome.states)
        steps.append((before, outcome.effects))
    return current, steps


def run_lengths(periods: Sequence[int], grace_periods: int) -> list[int]:
    """Lengths of the runs of qualifying periods, straight from the rule: a period joins
    the run before it when at most `grace_periods` periods were missed in between."""
    lengths: list[int] = []
    previous: int | None = None
    for index in sorted(periods):
        missed = None if previous is None else index - previous - 1
        if missed is not None and missed <= grace_periods:
            lengths[-1] += 1
        else:
            lengths.append(1)
        previous = index
    return lengths


def in_time_order(events: Sequence[EventIn]) -> list[EventIn]:
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


def completions(states: Mapping[int, QuestState], quest_id: int) -> int:
    return states.get(quest_id, QuestState()).completions


@PROPERTY
@given(quests=quest_defs(), events=histories(), data=st.data())
def test_without_requires_or_caps_every_arrival_order_gives_the_same_states(
    quests: list[QuestDef], events: list[EventIn], data: st.DataObject
) -> None:
    recomputed, _ = fold(quests, {}, events)
    other_order = data.draw(st.permutations(events))
    assert fold(quests, {}, other_order)[0] == recomputed
    assert live(quests, events)[0] == recomputed
    assert live(quests, other_order)[0] == recomputed
    assert live(quests, list(reversed(in_time_order(events))))[0] == recomputed


@PROPERTY
@given(quests=quest_defs(caps=True, requires=True), events=histories())
def test_recompute_equals_live_processing_in_occurred_at_order(
    quests: list[QuestDef], events: list[EventIn]
) -> None:
    recomputed, recomputed_effects = fold(quests, {}, events)
    states, steps = live(quests, in_time_order(events))
    assert states == recomputed
    assert [e for _, effects in steps for e in effects] == recomputed_effects


@PROPERTY
@given(quests=quest_defs(caps=True, requires=True), events=histories())
def test_caps_hold_and_completions_never_decrease_as_events_arrive(
    quests: list[QuestDef], events: list[EventIn]
) -> None:
    states, steps = live(quests, events)
    snapshots = [before for before, _ in steps] + [states]
    for before, after in zip(snapshots, snapshots[1:], strict=False):
        for quest in quests:
            old = before.get(quest.quest_id, QuestState())
            new = after.get(quest.quest_id, QuestState())
            assert new.completions >= old.completions
            if quest.duplication is not None:
                assert new.completions <= quest.duplication
            if quest.measure is not Measure.CONSECUTIVE:
                for key, period in new.periods.items():
                    assert period.completions >= old.period(key).completions
                    if quest.max_per_period is not None:
                        assert period.completions <= quest.max_per_period
                assert sum(p.completions for p in new.periods.values()) == new.completions


@PROPERTY
@given(quests=quest_defs(caps=True, requires=True), events=histories(max_size=15))
def test_adding_an_event_to_a_history_never_lowers_recomputed_completions(
    quests: list[QuestDef], events: list[EventIn]
) -> None:
    previous: dict[int, QuestState] = {}
    for size in range(1, len(events) + 1):
        recomputed, _ = fold(quests, {}, events[:size])
        for quest in quests:
            assert completions(recomputed, quest.quest_id) >= completions(previous, quest.quest_id)
        previous = recomputed


@PROPERTY
@given(quests=quest_defs(caps=True, requires=True), events=histories())
def test_one_reward_per_completion_numbered_without_gaps(
    quests: list[QuestDef], events: list[EventIn]
) -> None:
    states, steps = live(quests, events)
    effects = [e for _, step in steps for e in step]
    for quest in quests:
        done = completions(states, quest.quest_id)
        completed = [e for e in effects if isinstance(e, QuestCompleted)
                     and e.quest_id == quest.quest_id]
        earned = [e for e in effects if isinstance(e, RewardEarned)
                  and e.quest_id == quest.quest_id]
        assert [e.completion_no for e in completed] == list(range(1, done + 1))
        assert [e.completion_no for e in earned] == list(range(1, done + 1))
        assert all(r.items == quest.rewards and r.auto_claim is quest.auto_claim for r in earned)
    for _, step in steps:
        # Per quest and event: one quest_progress first, then completed/earned pairs.
        for quest_id, count in Counter(e.quest_id for e in step
                                       if isinstance(e, QuestProgressed)).items():
            assert count == 1
            mine = [e for e in step if e.quest_id == quest_id]
            assert isinstance(mine[0], QuestProgressed)
            pairs = list(zip(mine[1::2], mine[2::2], strict=True))
            assert all(isinstance(c, QuestCompleted) and isinstance(r, RewardEarned)
                       and c.completion_no == r.completion_no for c, r in pairs)


@PROPERTY
@given(quests=quest_defs(caps=True, requires=True), events=histories())
def test_an_event_counts_only_when_requirements_were_met_before_it(
    quests: list[QuestDef], events: list[EventIn]
) -> None:
    by_id = {q.quest_id: q for q in quests}
    _, steps = live(quests, events)
    for before, effects in steps:
        for quest_id in {e.quest_id for e in effects}:
            for required in by_id[quest_id].requires:
                assert completions(before, required) >= 1


@PROPERTY
@given(quests=quest_defs(), events=histories())
def test_streaks_earn_what_their_runs_are_worth(
    quests: list[QuestDef], events: list[EventIn]
) -> None:
    states, _ = fold(quests, {}, events)
    for quest in quests:
        if quest.measure is not Measure.CONSECUTIVE or quest.quest_id not in states:
            continue
        state = states[quest.quest_id]
        lengths = run_lengths(state.streak_periods, quest.grace_periods)
        # From the rule: each run of length L earns L // target; the longest is the best.
        assert state.completions == sum(length // quest.target for length in lengths)
        assert state.streak_completions == state.completions
        assert state.best_streak == max(lengths)
        assert list(state.streak_periods) == sorted(set(state.streak_periods))


@PROPERTY
@given(quests=quest_defs(caps=True, requires=True), events=histories())
def test_at_a_cap_an_event_records_nothing(
    quests: list[QuestDef], events: list[EventIn]
) -> None:
    by_id = {q.quest_id: q for q in quests}
    _, steps = live(quests, events)
    for before, effects in steps:
        for progressed in (e for e in effects if isinstance(e, QuestProgressed)):
            quest = by_id[progressed.quest_id]
            state = before.get(quest.quest_id, QuestState())
            if quest.duplication is not None:
                assert state.completions < quest.duplication
            if quest.max_per_period is not None and quest.measure is not Measure.CONSECUTIVE:
                assert state.period(progressed.period_key).completions < quest.max_per_period
