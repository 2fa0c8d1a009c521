"""The verdict: every user's state against the rules, from the database alone."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any

from .load import Player, Tally


@dataclass
class Verdict:
    failures: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    def check(self, ok: bool, message: str) -> None:
        if not ok:
            self.failures.append(message)


def verify(
    engine: Any,
    players: list[Player],
    quests: dict[int, dict[str, Any]],
    tally: Tally,
    extra_wallet: dict[int, collections.Counter[str]] | None = None,
) -> Verdict:
    """Every user's state against the rules, from the database alone. The wallet must hold
    the claimed sign-in rewards plus `extra_wallet` (what other quests earned, computed
    independently: the gameplay events' verdict)."""
    from sqlalchemy import text

    v = Verdict()
    by_id = {p.user_id: p for p in players}
    with engine.connect() as conn:
        stored: dict[int, list[tuple[int, bool]]] = collections.defaultdict(list)
        for event_id, user_id, processed in conn.execute(
            text(
                "SELECT event_id, user_id, processed_at IS NOT NULL FROM events "
                "WHERE type = 'sign_in' ORDER BY event_id"
            )
        ):
            stored[user_id].append((event_id, processed))
        # How often each sign-in advanced each quest: quest_progress events carry it.
        applications: dict[tuple[int, int], int] = {
            (int(sid), qid): n
            for sid, qid, n in conn.execute(
                text(
                    "SELECT data->>'sign_in_id', quest_id, count(*) FROM events "
                    "WHERE type = 'quest_progress' AND data ? 'sign_in_id' GROUP BY 1, 2"
                )
            )
        }
        # v1's curr_streak is the progress of a quest's one period (""), a whole number.
        progress = {
            (u, q): (int(s or 0), c)
            for u, q, s, c in conn.execute(
                text(
                    "SELECT p.user_id, p.quest_id, pp.progress, p.completions "
                    "FROM user_quest_progress p LEFT JOIN user_quest_periods pp "
                    "ON pp.user_id = p.user_id AND pp.quest_id = p.quest_id "
                    "AND pp.period_key = ''"
                )
            )
        }
        rewards: dict[tuple[int, int], list[tuple[int, str, Any]]] = collections.defaultdict(list)
        for u, q, no, status, items in conn.execute(
            text("SELECT user_id, quest_id, completion_no, status, items FROM user_rewards")
        ):
            rewards[(u, q)].append((no, status, items))
        wallets: dict[int, dict[str, int]] = collections.defaultdict(dict)
        for u, item, balance in conn.execute(text("SELECT user_id, item, balance FROM wallets")):
            wallets[u][item] = int(balance)
        pending, dead = conn.execute(
            text(
                "SELECT count(*) FILTER (WHERE dead_at IS NULL), "
                "count(*) FILTER (WHERE dead_at IS NOT NULL) FROM events "
                "WHERE type = 'sign_in' AND processed_at IS NULL"
            )
        ).one()

    counter_quest = min(q for q, spec in quests.items() if spec["duplication"] >= 10**6)
    lost = double = over = capped = uncapped = wallet_mismatches = 0
    answered_total = stored_total = 0
    for user_id, player in by_id.items():
        events = stored.get(user_id, [])
        stored_ids = {e for e, _ in events}
        processed_ids = {e for e, done in events if done}
        answered = set(player.answered)
        answered_total += len(answered)
        stored_total += len(events)
        missing = answered - stored_ids
        v.check(not missing, f"user {user_id}: answered sign-ins not stored: {sorted(missing)[:5]}")
        unapplied = [e for e in answered if applications.get((e, counter_quest), 0) == 0]
        lost += len(unapplied) + len(missing)
        twice = [e for e in stored_ids if applications.get((e, counter_quest), 0) > 1]
        double += len(twice)
        v.check(not unapplied, f"user {user_id}: {len(unapplied)} answered sign-ins never applied")
        v.check(not twice, f"user {user_id}: {len(twice)} sign-ins applied more than once")
        n = len(processed_ids)
        wallet: collections.Counter[str] = collections.Counter((extra_wallet or {}).get(user_id))
        for quest_id, spec in quests.items():
            streak, dup = spec["streak"], spec["duplication"]
            completions = min(dup, n // streak)
            curr = n % streak if n // streak < dup else 0
            got = progress.get((user_id, quest_id), (0, 0))
            v.check(
                got == (curr, completions),
                f"user {user_id} quest {quest_id}: (curr_streak, completions) = {got}, "
                f"the rules say {(curr, completions)} for {n} sign-ins",
            )
            if quest_id != counter_quest:
                if n // streak >= dup:
                    capped += 1
                else:
                    uncapped += 1
            earned = rewards.get((user_id, quest_id), [])
            numbers = sorted(no for no, *_ in earned)
            v.check(
                numbers == list(range(1, got[1] + 1)),
                f"user {user_id} quest {quest_id}: completion numbers {numbers[:10]} "
                f"for {got[1]} completions",
            )
            claimed = [r for r in earned if r[1] == "claimed"]
            over += max(0, len(earned) - completions)
            v.check(len(claimed) <= len(earned), f"user {user_id}: claimed more than earned")
            if spec["auto_claim"]:
                v.check(
                    len(claimed) == len(earned),
                    f"user {user_id} quest {quest_id}: auto-claim reward not credited",
                )
            else:
                ok, unknown = tally.claims_ok[user_id], tally.claims_unknown[user_id]
                v.check(
                    ok <= len(claimed) <= ok + unknown,
                    f"user {user_id} quest {quest_id}: {len(claimed)} rewards claimed, "
                    f"clients saw {ok} claims succeed ({unknown} unanswered)",
                )
            for _, _, items in claimed:
                for line in items:
                    wallet[line["item"]] += line["qty"]
        got_wallet = {k: n for k, n in sorted(wallets.get(user_id, {}).items()) if n}
        want_wallet = {k: n for k, n in sorted(wallet.items()) if n}
        if got_wallet != want_wallet:
            over += 1
            wallet_mismatches += 1
        v.check(
            got_wallet == want_wallet,
            f"user {user_id}: wallet {got_wallet}, claimed and auto-claimed rewards sum to "
            f"{want_wallet}",
        )
    v.check(pending == 0, f"{pending} sign-ins still pending")
    v.check(dead == 0, f"{dead} sign-ins dead-lettered")
    v.check(
        not tally.replay_mismatches, f"idempotent replays differ: {tally.replay_mismatches[:5]}"
    )
    v.figures.update(
        answered=answered_total,
        stored=stored_total,
        lost=lost,
        double_applied=double,
        over_granted=over,
        wallet_mismatches=wallet_mismatches,
        pending=pending,
        dead=dead,
        capped_pairs=capped,
        uncapped_pairs=uncapped,
    )
    return v
