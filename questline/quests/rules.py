"""The persistence shell around the quest engine: inputs in, state and history out.

`apply_inputs` applies stored inputs (sign-ins and gameplay events) exactly once: it
locks them, reads the catalog (questline.catalog.source), locks the (user, quest)
lifetime rows the events can touch in (user_id, quest_id) order, loads the period
rows they fall in, lets questline.engine.evaluate decide, and writes what it
returned: period rows, lifetime rows, earned rewards (auto-claim ones credited to
the wallet), history, and the inputs marked processed. Every rule lives in the
engine; this module only moves state between rows and engine values.

History data: every entry names its input as "event_id" (sign-ins also as v1's
"sign_in_id"), and its period as "period_key" for gameplay events and for quests with
periods. quest_progress carries where the event took the quest before a completion
took the target off: "curr_streak" for sign-ins (v1's field), "progress" otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from models import EventType, RewardStatus
from models.base import utcnow
from questline.catalog.source import Catalog, CatalogSource, catalog_source
from questline.engine import (
    Effect,
    EvaluationError,
    EventIn,
    Measure,
    PeriodState,
    QuestCompleted,
    QuestDef,
    QuestProgressed,
    QuestState,
    RewardEarned,
    evaluate,
    quest_period,
)
from questline.engine.conditions import trigger_matches
from questline.quests import history as history_log
from questline.quests import repository
from questline.quests.history import reward_claimed_entry
from questline.quests.repository import InputRow, LifetimeRow, PeriodRow
from questline.wallet import repository as wallet

NEW_QUEST = QuestState()
# Plain strings for the per-row tests below (comparing with the enum member costs ~6x).
_SIGN_IN = EventType.SIGN_IN.value
_ATTR_TYPES = (str, int, float, bool)


@dataclass
class Applied:
    """What one call applied: the inputs it marked processed and what they granted."""

    inputs: list[int] = field(default_factory=list)
    users: dict[int, int] = field(default_factory=dict)  # event_id -> user_id
    lag_seconds: list[float] = field(default_factory=list)
    rewards_earned: int = 0
    history_events: int = 0


@dataclass(frozen=True)
class Happened:
    """An engine effect for `user_id` and the input that caused it (None: granted by
    recompute)."""

    user_id: int
    event: EventIn | None
    effect: Effect


def apply_inputs(
    session: Session,
    *,
    event_ids: Sequence[int] | None = None,
    created_before: datetime | None = None,
    limit: int = 1,
    wait: bool = False,
    guard: bool = True,
    catalog: CatalogSource | None = None,
) -> Applied:
    """Lock pending inputs, apply the quest engine to them, mark them processed. Never
    commits.

    `event_ids` picks inputs; otherwise the oldest pending ones (stored before
    `created_before`) up to `limit`. Inputs locked by another worker are skipped
    unless `wait`. Processed inputs are left alone unless `guard` is off (a test-only
    fault that the reliability suite must catch). Raises EvaluationError for an input
    the engine cannot apply (the caller fails it alone and counts the attempt).
    """
    now = utcnow()
    locked = repository.lock_inputs(
        session,
        event_ids=event_ids,
        created_before=created_before,
        limit=limit if event_ids is None else len(event_ids),
        skip_locked=not wait,
        include_processed=not guard,
    )
    applied = Applied()
    if not locked:
        return applied
    events = [event_in(row) for row in locked]
    current = (catalog or catalog_source()).current(session)
    for event in events:
        broken = current.broken_for(event.type)
        if broken:
            raise EvaluationError(f"event {event.event_id}: {broken[0].reason}")

    plan = _plan(current, events)
    lifetime = repository.lock_lifetime(session, plan.pairs, now=now)
    required = repository.read_lifetime(session, plan.required - plan.pairs)
    periods = repository.read_periods(session, plan.period_keys)
    before = _states({**required, **lifetime}, periods)
    states = {user: dict(quests) for user, quests in before.items()}

    happened: list[Happened] = []
    for event in events:
        user_states = states.setdefault(event.user_id, {})
        outcome = evaluate(plan.quests[event.event_id], user_states, event)
        user_states.update(outcome.states)
        happened.extend(Happened(event.user_id, event, effect) for effect in outcome.effects)

    changed = [
        (user, quest_id, state)
        for user, quests in states.items()
        for quest_id, state in quests.items()
        if state != before.get(user, {}).get(quest_id, NEW_QUEST)
    ]
    repository.save_periods(
        session,
        [
            period_values(user, quest_id, key, period, now=now)
            for user, quest_id, state in changed
            for key, period in state.periods.items()
            if period != before.get(user, {}).get(quest_id, NEW_QUEST).periods.get(key)
        ],
    )
    # Most events move only a period's progress: the lifetime row (locked above) is
    # rewritten only when its own fields changed.
    repository.save_lifetime(
        session,
        [
            lifetime_values(user, quest_id, state, now=now)
            for user, quest_id, state in changed
            if _lifetime_of(state) != _lifetime_of(before.get(user, {}).get(quest_id, NEW_QUEST))
        ],
    )
    applied.rewards_earned, applied.history_events = record(session, happened, now=now)
    repository.mark_processed(session, [e.event_id for e in events], now=now)
    for row in locked:
        applied.inputs.append(row.event_id)
        applied.users[row.event_id] = row.user_id
        applied.lag_seconds.append((now - row.created_at).total_seconds())
    return applied


# The v1 name, for callers written before gameplay events existed.
apply_sign_ins = apply_inputs


def event_in(row: InputRow) -> EventIn:
    """The engine's view of a stored input row; EvaluationError if it cannot be one."""
    attrs = dict(row.attrs or {})
    for name, value in attrs.items():
        if not isinstance(value, _ATTR_TYPES):
            raise EvaluationError(
                f"event {row.event_id}: attribute {name!r} is not a string, number or boolean"
            )
    return EventIn(
        event_id=row.event_id,
        user_id=row.user_id,
        type=row.type,
        occurred_at=row.occurred_at,
        tz=row.tz or "UTC",
        value=Decimal(1) if row.value is None else row.value,
        attrs=attrs,
    )


@dataclass
class _Plan:
    """What a batch touches: per input the quests it can count for, the lifetime rows to
    lock (and the required quests' rows to read), and the period rows to load."""

    quests: dict[int, list[QuestDef]] = field(default_factory=dict)
    pairs: set[tuple[int, int]] = field(default_factory=set)
    required: set[tuple[int, int]] = field(default_factory=set)
    period_keys: set[tuple[int, int, str]] = field(default_factory=set)


def _plan(catalog: Catalog, events: Iterable[EventIn]) -> _Plan:
    plan = _Plan()
    for event in events:
        quests = [
            q
            for q in catalog.triggered_by(event.type)
            if trigger_matches(q.trigger, event.type, event.attrs)
        ]
        plan.quests[event.event_id] = quests
        for quest in quests:
            plan.pairs.add((event.user_id, quest.quest_id))
            plan.required.update((event.user_id, r) for r in quest.requires)
            if quest.measure is not Measure.CONSECUTIVE:
                key = quest_period(quest, event.occurred_at, event.tz).key
                plan.period_keys.add((event.user_id, quest.quest_id, key))
    return plan


def _states(
    lifetime: Mapping[tuple[int, int], LifetimeRow],
    periods: Mapping[tuple[int, int, str], PeriodRow],
) -> dict[int, dict[int, QuestState]]:
    by_pair: dict[tuple[int, int], dict[str, PeriodState]] = {}
    for (user, quest_id, key), period in periods.items():
        by_pair.setdefault((user, quest_id), {})[key] = PeriodState(
            period.progress, period.completions
        )
    states: dict[int, dict[int, QuestState]] = {}
    for (user, quest_id), row in lifetime.items():
        states.setdefault(user, {})[quest_id] = quest_state(
            row, by_pair.get((user, quest_id), {})
        )
    return states


def quest_state(lifetime: LifetimeRow | None, periods: Mapping[str, PeriodState]) -> QuestState:
    """The engine state of one user on one quest from its stored rows."""
    if lifetime is None:
        return QuestState(periods=dict(periods))
    return QuestState(
        completions=lifetime.completions,
        best_streak=lifetime.best_streak,
        streak_periods=tuple(sorted(lifetime.streak_periods or ())),
        streak_completions=lifetime.streak_completions,
        periods=dict(periods),
    )


def _lifetime_of(state: QuestState) -> tuple[object, ...]:
    """The part of a quest state its lifetime row holds."""
    return (
        state.completions,
        state.best_streak,
        state.streak_periods,
        state.streak_completions,
    )


def lifetime_values(
    user_id: int, quest_id: int, state: QuestState, *, now: datetime, completions: int | None = None
) -> dict[str, Any]:
    """A user_quest_progress row holding `state` (completions overridable)."""
    return {
        "user_id": user_id,
        "quest_id": quest_id,
        "completions": state.completions if completions is None else completions,
        "best_streak": state.best_streak,
        "streak_periods": list(state.streak_periods),
        "streak_completions": state.streak_completions,
        "updated_at": now,
    }


def period_values(
    user_id: int, quest_id: int, key: str, period: PeriodState, *, now: datetime
) -> dict[str, Any]:
    """A user_quest_periods row holding `period`."""
    return {
        "user_id": user_id,
        "quest_id": quest_id,
        "period_key": key,
        "progress": period.progress,
        "completions": period.completions,
        "updated_at": now,
    }


def record(session: Session, happened: Sequence[Happened], *, now: datetime) -> tuple[int, int]:
    """Write effects: earned rewards (auto-claim ones credited to the wallet, keyed by
    their reward row), then the history, one statement per kind.
    Returns (rewards earned, history entries)."""
    earned = [(h, h.effect) for h in happened if isinstance(h.effect, RewardEarned)]
    reward_ids = repository.add_earned_rewards(
        session, [_reward_row(h.user_id, effect, now=now) for h, effect in earned]
    )
    reward_of = {id(h): rid for (h, _), rid in zip(earned, reward_ids, strict=True)}
    wallet.credit(
        session,
        [
            wallet.Credit(h.user_id, item.item, item.qty, f"user_reward:{reward_of[id(h)]}")
            for h, effect in earned
            if effect.auto_claim
            for item in effect.items
        ],
        now=now,
    )
    history: list[dict[str, Any]] = []
    for h in happened:
        history.extend(history_entries(h, now=now, user_reward_id=reward_of.get(id(h))))
    history_log.add(session, history)
    return len(earned), len(history)


def _reward_row(user_id: int, effect: RewardEarned, *, now: datetime) -> dict[str, Any]:
    first = effect.items[0]
    waits = not effect.auto_claim and effect.expires_after_seconds is not None
    return {
        "user_id": user_id,
        "quest_id": effect.quest_id,
        "completion_no": effect.completion_no,
        "reward_item": first.item,
        "reward_qty": first.qty,
        "items": _bundle(effect),
        "status": RewardStatus.CLAIMED if effect.auto_claim else RewardStatus.NOT_CLAIMED,
        "earned_at": now,
        "expires_at": now + timedelta(seconds=effect.expires_after_seconds or 0) if waits else None,
        "claimed_at": now if effect.auto_claim else None,
    }


def _bundle(effect: RewardEarned) -> list[dict[str, Any]]:
    return [{"item": line.item, "qty": line.qty} for line in effect.items]


def history_entries(
    happened: Happened, *, now: datetime, user_reward_id: int | None = None
) -> list[dict[str, Any]]:
    """The history rows one effect records: quest_progress, quest_completed, or
    reward_earned (with `user_reward_id`, the reward's row) followed, for an auto-claim
    quest, by its reward_claimed (built by questline.quests.history, as for claims)."""
    event, effect = happened.event, happened.effect
    sign_in = event is not None and event.type == _SIGN_IN
    if event is None:
        data: dict[str, Any] = {"recomputed": True}
    elif sign_in:
        data = {"event_id": event.event_id, "sign_in_id": event.event_id}
    else:
        data = {"event_id": event.event_id}
    if effect.period_key or (event is not None and not sign_in):
        data["period_key"] = effect.period_key
    origin = data.copy() if isinstance(effect, RewardEarned) and effect.auto_claim else None
    if isinstance(effect, QuestProgressed):
        data["curr_streak" if sign_in else "progress"] = _number(effect.reached)
    elif isinstance(effect, QuestCompleted):
        data["completions"] = effect.completion_no
    else:
        if user_reward_id is None:
            raise ValueError("a reward_earned entry needs its reward's user_reward_id")
        first = effect.items[0]
        data.update(
            user_reward_id=user_reward_id,
            completion_no=effect.completion_no,
            reward_item=first.item,
            reward_qty=first.qty,
            items=_bundle(effect),
        )
    entry = {
        "user_id": happened.user_id,
        "quest_id": effect.quest_id,
        "type": effect.history_type,
        "data": data,
        "created_at": now,
    }
    if origin is None or not user_reward_id or not isinstance(effect, RewardEarned):
        return [entry]
    claimed = reward_claimed_entry(
        user_id=happened.user_id,
        quest_id=effect.quest_id,
        user_reward_id=user_reward_id,
        completion_no=effect.completion_no,
        items=_bundle(effect),
        now=now,
        auto_claim=True,
    )
    claimed["data"] = {**origin, **claimed["data"]}
    return [entry, claimed]


def _number(amount: Decimal) -> int | float:
    """A progress amount as a JSON number (state keeps the exact Decimal)."""
    whole = int(amount)
    return whole if whole == amount else float(amount)
