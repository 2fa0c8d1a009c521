"""`questline recompute`: rebuild quest progress from the stored inputs.

A user's applied inputs (sign-ins and gameplay events, processed_at set) are folded by
the engine (engine.fold: in (occurred_at, event_id) order, from nothing) with today's
definitions, and the result is compared with what is stored: completions, progress per
period, streaks. Applying writes the rebuilt state and grants the rewards the history
earns but the user lacks (completion numbers above the highest held). It never revokes:
completions stay at least the highest completion number a reward exists for, so the
next completion never collides with a reward already granted.

Inputs not yet applied are left out: the drain applies them on top of the rebuilt state.
The user's lifetime rows are locked before the inputs are read, so a drain applying an
input meanwhile either committed before (its input is folded) or waits (it applies its
input on top of the rebuilt state).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy.orm import Session

from models import User
from models.base import utcnow
from questline.catalog.source import Catalog, CatalogSource, catalog_source
from questline.engine import (
    Effect,
    PeriodKind,
    PeriodState,
    QuestCompleted,
    QuestDef,
    QuestState,
    RewardEarned,
    fold,
)
from questline.errors import NotFound
from questline.quests import repository
from questline.quests.repository import LifetimeRow, PeriodRow
from questline.quests.rules import (
    Happened,
    event_in,
    lifetime_values,
    period_values,
    quest_state,
    record,
)

NEW_QUEST = QuestState()


@dataclass(frozen=True)
class Rebuilt:
    """One user's quest as stored and as its history rebuilds it."""

    user_id: int
    quest: QuestDef
    stored: QuestState
    rebuilt: QuestState
    rewards_held: int  # the highest completion number the user holds a reward for
    earned: tuple[Effect, ...] = ()  # the completions and rewards of the rebuilt history

    @property
    def quest_id(self) -> int:
        return self.quest.quest_id

    @property
    def completions(self) -> int:
        """What applying writes: the rebuilt count, never below a reward already held."""
        return max(self.rebuilt.completions, self.rewards_held)

    @property
    def missing_rewards(self) -> range:
        """Completion numbers the history earns that have no reward yet."""
        return range(self.rewards_held + 1, self.rebuilt.completions + 1)

    def changes(self) -> list[str]:
        """What differs, in words; empty when the stored state is the rebuilt one."""
        stored, rebuilt = self.stored, self.rebuilt
        found: list[str] = []
        if self.completions != stored.completions:
            found.append(f"completions {stored.completions} -> {self.completions}")
        if rebuilt.completions < self.rewards_held:
            found.append(
                f"history earns {rebuilt.completions} completions, rewards are held up to "
                f"{self.rewards_held}: kept (rewards are never revoked)"
            )
        for key in sorted(set(stored.periods) | set(rebuilt.periods)):
            before, after = stored.period(key), rebuilt.period(key)
            if before != after:
                found.append(f"period {key or 'none'!r}: {_period_change(before, after)}")
        if stored.streak_periods != rebuilt.streak_periods:
            added = sorted(set(rebuilt.streak_periods) - set(stored.streak_periods))
            dropped = sorted(set(stored.streak_periods) - set(rebuilt.streak_periods))
            parts = [f"+{_label(self.quest, i)}" for i in added]
            parts += [f"-{_label(self.quest, i)}" for i in dropped]
            found.append(f"streak periods {' '.join(parts)}")
        if stored.best_streak != rebuilt.best_streak:
            found.append(f"best streak {stored.best_streak} -> {rebuilt.best_streak}")
        if stored.streak_completions != rebuilt.streak_completions:
            found.append(
                f"streak completions {stored.streak_completions} -> "
                f"{rebuilt.streak_completions}"
            )
        if self.missing_rewards:
            numbers = ", ".join(str(n) for n in self.missing_rewards)
            found.append(f"rewards to grant: completion {numbers}")
        return found


def users_in_scope(
    session: Session, *, user_id: int | None = None, quest_id: int | None = None
) -> list[int]:
    """The users to rebuild: `user_id` alone, or everyone with applied inputs or progress.
    NotFound for an unknown user or a quest that is not active."""
    if quest_id is not None:
        in_scope(catalog_source().current(session), quest_id)
    if user_id is not None:
        if session.get(User, user_id) is None:
            raise NotFound(f"user {user_id} does not exist")
        return [user_id]
    return repository.users_with_quest_state(session)


def in_scope(catalog: Catalog, quest_id: int | None) -> list[QuestDef]:
    """The quests to fold: every active quest, or `quest_id` with the active quests it
    requires (directly or not), whose completions it depends on."""
    if quest_id is None:
        return list(catalog.quests)
    if catalog.quest(quest_id) is None:
        raise NotFound(f"quest {quest_id} is not an active quest with a valid definition")
    found: dict[int, QuestDef] = {}
    waiting = [quest_id]
    while waiting:
        quest = catalog.quest(waiting.pop())
        if quest is not None and quest.quest_id not in found:
            found[quest.quest_id] = quest
            waiting.extend(quest.requires)
    return [found[q] for q in sorted(found)]


def rebuild_user(
    session: Session,
    user_id: int,
    *,
    quest_id: int | None = None,
    apply: bool = False,
    now: datetime | None = None,
    catalog: CatalogSource | None = None,
) -> list[Rebuilt]:
    """Rebuild one user's active quests (or `quest_id` alone) from their applied inputs;
    the quests that differ. With `apply`, write the rebuilt state and grant the missing
    rewards. Never commits. Raises EvaluationError when an input cannot be folded."""
    now = now or utcnow()
    current = (catalog or catalog_source()).current(session)
    quests = in_scope(current, quest_id)
    reported = [q for q in quests if quest_id in (None, q.quest_id)]
    pairs = {(user_id, q.quest_id) for q in reported}
    if apply:
        lifetime = repository.lock_lifetime(session, pairs, now=now)
    else:
        lifetime = repository.read_lifetime(session, pairs, for_share=True)
    scope = {q.quest_id for q in quests}
    # Requirements outside the fold (inactive quests) count as stored.
    outside = {r for q in quests for r in q.requires} - scope
    seeds = repository.read_lifetime(session, {(user_id, r) for r in outside})
    periods = repository.periods_of(session, user_id, [q.quest_id for q in reported])
    stored = _stored(user_id, lifetime, periods)

    rows = repository.processed_inputs(
        session, user_id, types={q.trigger.event for q in quests}
    )
    initial = {quest_id: quest_state(row, {}) for (_, quest_id), row in seeds.items()}
    states, effects = fold(quests, initial, [event_in(row) for row in rows])

    held = repository.highest_rewards(session, user_id)
    result = []
    for quest in reported:
        rebuilt = Rebuilt(
            user_id=user_id,
            quest=quest,
            stored=stored.get(quest.quest_id, NEW_QUEST),
            rebuilt=states.get(quest.quest_id, NEW_QUEST),
            rewards_held=held.get(quest.quest_id, 0),
            earned=tuple(
                e
                for e in effects
                if e.quest_id == quest.quest_id and isinstance(e, QuestCompleted | RewardEarned)
            ),
        )
        if rebuilt.changes():
            result.append(rebuilt)
    if apply:
        _write(session, result, now=now)
    return result


def _stored(
    user_id: int,
    lifetime: Mapping[tuple[int, int], LifetimeRow],
    periods: Sequence[PeriodRow],
) -> dict[int, QuestState]:
    by_quest: dict[int, dict[str, PeriodState]] = {}
    for p in periods:
        by_quest.setdefault(p.quest_id, {})[p.period_key] = PeriodState(p.progress, p.completions)
    quest_ids = {q for _, q in lifetime} | set(by_quest)
    return {
        q: quest_state(lifetime.get((user_id, q)), by_quest.get(q, {})) for q in quest_ids
    }


def _write(session: Session, rebuilds: Collection[Rebuilt], *, now: datetime) -> None:
    """Write rebuilt states (lifetime rows, period rows replaced) and grant the missing
    rewards, with their history."""
    repository.save_lifetime(
        session,
        [
            lifetime_values(r.user_id, r.quest_id, r.rebuilt, now=now, completions=r.completions)
            for r in rebuilds
        ],
    )
    for r in rebuilds:
        repository.delete_periods(session, r.user_id, r.quest_id)
    repository.save_periods(
        session,
        [
            period_values(r.user_id, r.quest_id, key, period, now=now)
            for r in rebuilds
            for key, period in sorted(r.rebuilt.periods.items())
        ],
    )
    record(
        session,
        [
            Happened(r.user_id, None, effect)
            for r in rebuilds
            for effect in r.earned
            if isinstance(effect, QuestCompleted | RewardEarned)
            and effect.completion_no in r.missing_rewards
        ],
        now=now,
    )


def _period_change(before: PeriodState, after: PeriodState) -> str:
    parts = []
    if before.progress != after.progress:
        parts.append(f"progress {_amount(before.progress)} -> {_amount(after.progress)}")
    if before.completions != after.completions:
        parts.append(f"completions {before.completions} -> {after.completions}")
    return ", ".join(parts)


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _label(quest: QuestDef, index: int) -> str:
    """A qualifying period's index as a reader knows the period (display only)."""
    if quest.period is PeriodKind.DAY:
        return date.fromordinal(index).isoformat()
    if quest.period is PeriodKind.WEEK:
        # Week indexes are the first day's ordinal // 7: find that first day.
        first = date.fromordinal(max(1, index * 7))
        while first.weekday() != quest.week_starts_on.number:
            first += timedelta(days=1)
        return first.isoformat()
    if quest.period is PeriodKind.MONTH:
        return f"{index // 12:04d}-{index % 12 + 1:02d}"
    return str(index)

