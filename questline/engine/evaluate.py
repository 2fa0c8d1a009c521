"""The one rule engine: apply one event to one user's quests. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import MAX_EMAX, MAX_PREC, MIN_EMIN, Context, Decimal

from questline.engine.conditions import trigger_matches
from questline.engine.definitions import Measure, QuestDef
from questline.engine.effects import (
    Effect,
    Outcome,
    QuestCompleted,
    QuestProgressed,
    RewardEarned,
)
from questline.engine.events import EvaluationError, EventIn
from questline.engine.periods import quest_period
from questline.engine.state import NEW_QUEST, NOTHING_YET, PeriodState, QuestState
from questline.engine.streaks import join

# Sums stay exact whatever the values' digits: no rounding, so no order dependence. The
# arithmetic calls this context's methods rather than entering it (`localcontext`), which
# cost more than the sums themselves, once per quest and event.
EXACT = Context(prec=MAX_PREC, Emax=MAX_EMAX, Emin=MIN_EMIN)
ZERO = Decimal(0)
ONE = Decimal(1)

# One event completing one quest more often than this is a definition mistake (a sum
# target far below the values sent); the event is refused rather than flood the wallet.
MAX_COMPLETIONS_PER_EVENT = 1000


def evaluate(
    quests: Sequence[QuestDef], states: Mapping[int, QuestState], event: EventIn
) -> Outcome:
    """Apply `event` to the user's active `quests`, whose states before it are `states`.

    Quests go in quest_id order; a quest missing from `states` has not been started.
    Returns the new state of each quest the event changed, and the effects in order.
    `requires` is judged on `states` as they were before this event, so `states` must also
    hold the quests that active quests require (inactive ones included).
    Raises EvaluationError for an event that cannot be applied (see MAX_COMPLETIONS_PER_EVENT).
    """
    outcome = Outcome()
    for quest in sorted(quests, key=lambda q: q.quest_id):
        if not counts_for(quest, event, states):
            continue
        state = states.get(quest.quest_id, NEW_QUEST)
        if quest.duplication is not None and state.completions >= quest.duplication:
            continue  # lifetime cap reached: no change, no quest event
        if quest.measure is Measure.CONSECUTIVE:
            step = _qualify_period(quest, state, event)
        else:
            step = _add_progress(quest, state, event)
        if step is not None:
            outcome.states[quest.quest_id] = step.state
            outcome.effects.extend(step.effects)
    return outcome


def fold(
    quests: Sequence[QuestDef], states: Mapping[int, QuestState], events: Iterable[EventIn]
) -> tuple[dict[int, QuestState], list[Effect]]:
    """Recompute: apply one user's `events` in (occurred_at, event_id) order from `states`.

    Returns every state (the ones given, updated) and all effects in order.
    Raises EvaluationError when the events belong to more than one user.
    """
    ordered = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    users = {event.user_id for event in ordered}
    if len(users) > 1:
        raise EvaluationError(f"fold takes one user's events, got users {sorted(users)}")
    current = dict(states)
    effects: list[Effect] = []
    for event in ordered:
        outcome = evaluate(quests, current, event)
        current.update(outcome.states)
        effects.extend(outcome.effects)
    return current, effects


def counts_for(quest: QuestDef, event: EventIn, states: Mapping[int, QuestState]) -> bool:
    """True when the event matches the quest's trigger, falls in its window and the quest's
    requirements are met in `states`; caps are judged later."""
    return (
        trigger_matches(quest.trigger, event.type, event.attrs)
        and (quest.starts_at is None or quest.starts_at <= event.occurred_at)
        and (quest.ends_at is None or event.occurred_at < quest.ends_at)
        and requirements_met(quest, states)
    )


def requirements_met(quest: QuestDef, states: Mapping[int, QuestState]) -> bool:
    """True when every quest `quest` requires has been completed at least once."""
    return not quest.requires or all(
        states.get(required, NEW_QUEST).completions >= 1 for required in quest.requires
    )


@dataclass(frozen=True)
class _Step:
    state: QuestState
    effects: list[Effect]


def _add_progress(quest: QuestDef, state: QuestState, event: EventIn) -> _Step | None:
    """count and sum: grow the period's progress; each `target` reached is a completion."""
    period = quest_period(quest, event.occurred_at, event.tz)
    before = state.periods.get(period.key, NOTHING_YET)
    cap = quest.max_per_period
    if cap is not None and before.completions >= cap:
        return None  # period cap reached: the event is ignored
    counting = quest.measure is Measure.COUNT
    amount = ONE if counting else event.value
    if amount == 0:
        return None  # a sum event worth nothing changes nothing and records nothing
    reached = EXACT.add(before.progress, amount)
    if counting:
        # One event is one step (v1 rule 2): it completes the quest at most once, even
        # when a lowered target left more progress than the new target.
        completed = 1 if reached >= quest.target else 0
    else:
        completed = int(EXACT.divide_int(reached, quest.target))
    if cap is not None:
        completed = min(completed, cap - before.completions)
    if quest.duplication is not None:
        completed = min(completed, quest.duplication - state.completions)
    if completed > MAX_COMPLETIONS_PER_EVENT:
        raise EvaluationError(
            f"event {event.event_id} would complete quest {quest.quest_id} "
            f"{completed} times at once (at most {MAX_COMPLETIONS_PER_EVENT})"
        )
    # At a cap the rest stays in progress, even when it is target or more. A count
    # starts again from 0 after a completion (v1's curr_streak = 0), a sum keeps the
    # part beyond the targets it reached.
    if counting and completed:
        progress = ZERO
    else:
        progress = EXACT.subtract(reached, completed * quest.target)
    after = PeriodState(progress=progress, completions=before.completions + completed)
    new_state = QuestState(
        completions=state.completions + completed,
        best_streak=state.best_streak,
        streak_periods=state.streak_periods,
        streak_completions=state.streak_completions,
        periods={**state.periods, period.key: after},
    )
    effects: list[Effect] = [QuestProgressed(quest.quest_id, period.key, progress, reached)]
    if completed:
        effects.extend(_completions(quest, state.completions, completed, period.key))
    return _Step(new_state, effects)


def _qualify_period(quest: QuestDef, state: QuestState, event: EventIn) -> _Step | None:
    """consecutive: the event's period qualifies; runs of qualifying periods earn completions."""
    period = quest_period(quest, event.occurred_at, event.tz)
    if period.index in state.streak_periods:
        return None  # the period already qualified: nothing changes
    joined = join(state.streak_periods, period.index, quest.grace_periods, quest.target)
    streak_completions = state.streak_completions + joined.earned
    allowed = streak_completions
    if quest.duplication is not None:
        allowed = min(allowed, quest.duplication)
    completed = max(0, allowed - state.completions)  # a reward is never taken back
    new_state = QuestState(
        completions=state.completions + completed,
        best_streak=max(state.best_streak, joined.run.length),
        streak_periods=tuple(sorted((*state.streak_periods, period.index))),
        streak_completions=streak_completions,
        periods=state.periods,
    )
    length = Decimal(joined.run.length)
    effects: list[Effect] = [QuestProgressed(quest.quest_id, period.key, length, length)]
    effects.extend(_completions(quest, state.completions, completed, period.key))
    return _Step(new_state, effects)


def _completions(
    quest: QuestDef, done_before: int, completed: int, period_key: str
) -> list[Effect]:
    """One QuestCompleted and one RewardEarned per completion, numbered for the lifetime."""
    effects: list[Effect] = []
    for number in range(done_before + 1, done_before + completed + 1):
        effects.append(QuestCompleted(quest.quest_id, number, period_key))
        effects.append(
            RewardEarned(
                quest_id=quest.quest_id,
                completion_no=number,
                period_key=period_key,
                items=quest.rewards,
                auto_claim=quest.auto_claim,
                expires_after_seconds=quest.claim_within_seconds,
            )
        )
    return effects
