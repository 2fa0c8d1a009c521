"""The verdict on gameplay events: the expected state comes from the pure engine, not
from the workers. Each player's accepted events (as stored: occurred_at, zone, value,
attrs) are folded with engine.fold over the event quests' stored definitions, in
(occurred_at, event_id) order; completions, progress, streaks, rewards and the wallet
share they earn are compared with the database."""

from __future__ import annotations

import collections
from decimal import Decimal
from typing import Any

from .checks import Verdict
from .events import EventTally

Wallets = dict[int, collections.Counter[str]]


def verify_events(
    engine: Any, quest_ids: dict[int, str], tally: EventTally, user_ids: list[int]
) -> tuple[Verdict, Wallets]:
    """The events' verdict, and each user's expected wallet share from event quests."""
    from sqlalchemy import select, text
    from sqlalchemy.orm import Session

    from models import Quest
    from questline.catalog.definitions import quest_definition
    from questline.engine import EventIn, QuestProgressed, RewardEarned, fold

    v = Verdict()
    with Session(engine) as session:
        rows = session.scalars(select(Quest).where(Quest.quest_id.in_(list(quest_ids))))
        quests = [quest_definition(q) for q in rows]
    ids = list(quest_ids)
    with engine.connect() as conn:
        stored = conn.execute(
            text(
                "SELECT event_id, user_id, type, occurred_at, tz, value, attrs, idempotency_key, "
                "processed_at IS NOT NULL, dead_at IS NOT NULL FROM events "
                "WHERE occurred_at IS NOT NULL AND type <> 'sign_in'"
            )
        ).all()
        # How often each event advanced each quest (quest_progress history names it).
        applied = collections.Counter(
            {
                (int(e), q): n
                for e, q, n in conn.execute(
                    text(
                        "SELECT data->>'event_id', quest_id, count(*) FROM events "
                        "WHERE type = 'quest_progress' AND quest_id = ANY(:q) GROUP BY 1, 2"
                    ),
                    {"q": ids},
                )
            }
        )
        lifetime = {
            (u, q): (c, b, sc)
            for u, q, c, b, sc in conn.execute(
                text(
                    "SELECT user_id, quest_id, completions, best_streak, streak_completions "
                    "FROM user_quest_progress WHERE quest_id = ANY(:q)"
                ),
                {"q": ids},
            )
        }
        periods: dict[tuple[int, int], dict[str, tuple[Decimal, int]]] = collections.defaultdict(
            dict
        )
        for u, q, key, progress, c in conn.execute(
            text(
                "SELECT user_id, quest_id, period_key, progress, completions "
                "FROM user_quest_periods WHERE quest_id = ANY(:q)"
            ),
            {"q": ids},
        ):
            if progress or c:
                periods[(u, q)][key] = (Decimal(progress), c)
        rewards: dict[tuple[int, int], list[tuple[int, str, Any]]] = collections.defaultdict(list)
        for u, q, no, status, items in conn.execute(
            text(
                "SELECT user_id, quest_id, completion_no, status, items FROM user_rewards "
                "WHERE quest_id = ANY(:q)"
            ),
            {"q": ids},
        ):
            rewards[(u, q)].append((no, status, items))

    by_id = {row[0]: row for row in stored}
    accepted = tally.accepted
    lost = [e for e in accepted.values() if e not in by_id or not by_id[e][8]]
    unanswered = set(by_id) - set(accepted.values())
    twice = sorted({e for (e, _), n in applied.items() if n > 1})
    mismatched = {(u, key) for (u, key), e in accepted.items() if e in by_id and by_id[e][1] != u}
    v.check(not lost, f"{len(lost)} events answered 202 never applied: {sorted(lost)[:5]}")
    v.check(not unanswered, f"{len(unanswered)} events stored that no 202 answered")
    v.check(not twice, f"{len(twice)} events applied more than once: {twice[:5]}")
    v.check(not mismatched, f"events stored for another user: {sorted(mismatched)[:5]}")

    inputs: dict[int, list[Any]] = collections.defaultdict(list)
    for event_id, user_id, typ, occurred, tz, value, attrs, *_ in stored:
        inputs[user_id].append(
            EventIn(event_id=event_id, user_id=user_id, type=typ, occurred_at=occurred,
                    tz=tz or "UTC", value=Decimal(value), attrs=attrs or {})
        )  # fmt: skip
    applications: collections.Counter[tuple[int, int]] = collections.Counter()
    for (e, q), n in applied.items():
        if e in by_id:
            applications[(by_id[e][1], q)] += n
    wallets: Wallets = collections.defaultdict(collections.Counter)
    over = wrong = order_dependent = 0
    for user_id in user_ids:
        states, effects = fold(quests, {}, inputs.get(user_id, []))
        progressed = collections.Counter(
            e.quest_id for e in effects if isinstance(e, QuestProgressed)
        )
        for effect in effects:
            if isinstance(effect, RewardEarned) and effect.auto_claim:
                for line in effect.items:
                    wallets[user_id][line.item] += line.qty
        for quest in quests:
            q = quest.quest_id
            want = states.get(q)
            w_lifetime = (
                (want.completions, want.best_streak, want.streak_completions) if want else (0, 0, 0)
            )
            got_lifetime = lifetime.get((user_id, q), (0, 0, 0))
            w_periods = {
                k: (p.progress, p.completions)
                for k, p in (want.periods.items() if want else [])
                if p.progress or p.completions
            }
            got_periods = periods.get((user_id, q), {})
            label = f"user {user_id} {quest_ids[q]}"
            if got_lifetime[0] > w_lifetime[0] or _over_cap(quest, got_lifetime[0], got_periods):
                over += 1
                v.failures.append(f"{label}: over cap/rules: {got_lifetime[0]} completions, "
                                  f"the rules give {w_lifetime[0]}")  # fmt: skip
            if got_lifetime != w_lifetime:
                wrong += 1
                v.failures.append(f"{label}: (completions, best, streak) {got_lifetime}, "
                                  f"the fold gives {w_lifetime}")  # fmt: skip
            if got_periods != w_periods:
                if _capped_remainder_only(quest, got_periods, w_periods):
                    order_dependent += 1  # at a cap the remainder depends on arrival order
                else:
                    wrong += 1
                    v.failures.append(f"{label}: periods {_show(got_periods)}, "
                                      f"the fold gives {_show(w_periods)}")  # fmt: skip
            n_applied = applications[(user_id, q)]
            if n_applied != progressed[q] and not _sum_with_cap(quest):
                wrong += 1
                v.failures.append(f"{label}: {n_applied} applications recorded, "
                                  f"the fold applies {progressed[q]}")  # fmt: skip
            earned = rewards.get((user_id, q), [])
            numbers = sorted(no for no, _, _ in earned)
            v.check(numbers == list(range(1, w_lifetime[0] + 1)),
                    f"{label}: rewards {numbers[:10]} for {w_lifetime[0]} completions")  # fmt: skip
            bundle = [{"item": r.item, "qty": r.qty} for r in quest.rewards]
            v.check(all(s == "claimed" and items == bundle for _, s, items in earned),
                    f"{label}: an auto-claim reward unclaimed or not the bundle")  # fmt: skip
    pending = sum(1 for row in stored if not row[8] and not row[9])
    dead = sum(1 for row in stored if row[9])
    v.check(not tally.resend_mismatches, f"resent batches: {tally.resend_mismatches[:3]}")
    v.check(not tally.refused, f"batches refused: {tally.refused[:3]}")
    v.check(pending == 0 and dead == 0, f"events pending {pending}, dead {dead}")
    v.figures.update(
        events_accepted=len(accepted),
        events_stored=len(stored),
        events_lost=len(lost),
        events_twice=len(twice),
        events_over_cap=over,
        events_wrong_state=wrong,
        events_order_dependent=order_dependent,
        events_pending=pending,
        events_dead=dead,
    )
    return v, wallets


def _over_cap(quest: Any, completions: int, periods: dict[str, tuple[Decimal, int]]) -> bool:
    if quest.duplication is not None and completions > quest.duplication:
        return True
    cap = quest.max_per_period
    return cap is not None and any(c > cap for _, c in periods.values())


def _sum_with_cap(quest: Any) -> bool:
    from questline.engine import Measure

    caps = quest.max_per_period is not None or quest.duplication is not None
    return bool(quest.measure is Measure.SUM and caps)


def _capped_remainder_only(
    quest: Any, got: dict[str, tuple[Decimal, int]], want: dict[str, tuple[Decimal, int]]
) -> bool:
    """True when only the progress left in periods at their cap differs: which event
    crossed the cap, and so what is left, depends on arrival order (API.md v2)."""
    if not _sum_with_cap(quest) or set(got) != set(want):
        return False
    for key, (progress, completions) in want.items():
        g_progress, g_completions = got[key]
        if g_completions != completions:
            return False
        at_cap = quest.max_per_period is not None and completions >= quest.max_per_period
        if g_progress != progress and not at_cap:
            return False
    return True


def _show(periods: dict[str, tuple[Decimal, int]]) -> str:
    items = sorted(periods.items())[:4]
    return "{" + ", ".join(f"{k or 'none'}: {p.normalize():f}/{c}" for k, (p, c) in items) + "}"
