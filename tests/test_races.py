"""Races on the real database: 20 connections released together by a barrier.

Each test runs the domain's own entry points (the worker's outbox.process_sign_in,
the claim service, the catalog writer) in 20 threads with their own transactions,
then checks the invariants of DESIGN.md on what was committed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from models import Event, EventType, UserReward
from questline import outbox
from questline.catalog import cache
from questline.catalog import service as catalog
from questline.errors import Conflict
from questline.infra import db
from questline.quests import service as quests
from questline.wallet.repository import balances
from tests import factories as f

# Sign-ins stay pending until a racer applies them: no worker may sweep this database.
pytestmark = pytest.mark.usefixtures("no_worker")

THREADS = 20
SEED_QUEST = 1  # sign-in-three-times: streak 3, duplication 2, 10 diamonds by hand


def race(jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run the jobs in threads released at once; their results, or the exceptions they raised."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except Exception as exc:  # collected and asserted on by the caller
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        # A hang detector, not a budget: each thread runs one short transaction.
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a racing thread hung (deadlock?)"
    return results


def no_errors(results: list[Any]) -> None:
    errors = [r for r in results if isinstance(r, Exception)]
    assert not errors, f"{len(errors)} racing calls failed, e.g. {errors[0]!r}"


def new_user(name: str) -> int:
    with db.transaction() as s:
        return f.add_user(s, name).user_id


def store_sign_ins(user_id: int, n: int) -> list[int]:
    """n unprocessed sign-in events, as a login stores them."""
    with db.transaction() as s:
        return f.add_sign_ins(s, user_id, n)


def new_quest(*, streak: int, duplication: int, auto_claim: bool, item: str, qty: int) -> int:
    with db.transaction() as s:
        quest_id = f.add_quest(
            s,
            streak=streak,
            duplication=duplication,
            auto_claim=auto_claim,
            item=item,
            qty=qty,
            name=f"race-{streak}-{duplication}-{item}",
        ).quest_id
    cache.invalidate()
    return quest_id


def state(user_id: int, quest_id: int) -> tuple[int, int, int, int]:
    """(curr_streak, completions, rewards earned, rewards claimed)."""
    with db.transaction() as s:
        curr_streak, completions = f.progress(s, user_id, quest_id)
        rewards = s.scalars(
            select(UserReward).where(UserReward.user_id == user_id, UserReward.quest_id == quest_id)
        ).all()
        numbers = sorted(r.completion_no for r in rewards)
        assert numbers == list(range(1, len(rewards) + 1)), f"completion numbers {numbers}"
        return (
            curr_streak,
            completions,
            len(rewards),
            sum(r.status == "claimed" for r in rewards),
        )


def wallet(user_id: int) -> tuple[int, int]:
    """(gold, diamond)."""
    with db.transaction() as s:
        held = balances(s, user_id)
        return held["gold"], held["diamond"]


def applications(sign_in_id: int) -> int:
    """How many quest_progress events name this sign-in (one per quest it advanced)."""
    with db.transaction() as s:
        return int(
            s.scalar(
                select(func.count())
                .select_from(Event)
                .where(
                    Event.type == EventType.QUEST_PROGRESS,
                    Event.data["sign_in_id"].as_integer() == sign_in_id,
                )
            )
            or 0
        )


def test_the_same_sign_in_delivered_20_times_at_once_is_applied_once() -> None:
    user = new_user("racer")
    [sign_in] = store_sign_ins(user, 1)

    results = race([lambda: outbox.process_sign_in(sign_in)] * THREADS)

    no_errors(results)
    assert sum(len(r.inputs) for r in results) == 1
    assert state(user, SEED_QUEST) == (1, 0, 0, 0)
    assert applications(sign_in) == 1


def test_20_sign_ins_of_one_user_at_once_grant_exactly_the_cap() -> None:
    user = new_user("capper")
    capped = new_quest(streak=1, duplication=3, auto_claim=True, item="gold", qty=7)
    sign_ins = store_sign_ins(user, THREADS)

    results = race([lambda e=e: outbox.process_sign_in(e) for e in sign_ins])

    no_errors(results)
    assert sorted(e for r in results for e in r.inputs) == sign_ins
    assert state(user, capped) == (0, 3, 3, 3)  # exactly 3 grants, all auto-claimed
    assert state(user, SEED_QUEST) == (0, 2, 2, 0)  # 20 sign-ins // 3, capped at 2
    assert wallet(user) == (21, 0)


def test_claims_racing_the_workers_auto_claim_credit_each_reward_once() -> None:
    user = new_user("claimer")
    auto = new_quest(streak=1, duplication=1000, auto_claim=True, item="diamond", qty=1)
    for e in store_sign_ins(user, 6):  # two seed-quest rewards waiting to be claimed
        outbox.process_sign_in(e)
    more = store_sign_ins(user, THREADS // 2)

    def claim() -> dict[str, Any]:
        with db.transaction() as s:
            return quests.claim(s, user_id=user, quest_id=SEED_QUEST)

    results = race([claim] * (THREADS // 2) + [lambda e=e: outbox.process_sign_in(e) for e in more])

    claims = results[: THREADS // 2]
    assert sum(isinstance(r, dict) for r in claims) == 2
    assert all(isinstance(r, dict | Conflict) for r in claims), claims
    no_errors(results[THREADS // 2 :])
    assert state(user, SEED_QUEST)[2:] == (2, 2)
    assert state(user, auto) == (0, 16, 16, 16)
    assert wallet(user) == (0, 2 * 10 + 16)


def test_claims_with_one_idempotency_key_claim_once_and_all_get_the_first_answer() -> None:
    user = new_user("retrier")
    for e in store_sign_ins(user, 6):
        outbox.process_sign_in(e)

    def claim(key: str) -> quests.StoredAnswer:
        with db.transaction() as s:
            return quests.claim_once(s, user_id=user, quest_id=SEED_QUEST, key=key)

    same = race([lambda: claim("one-key")] * (THREADS // 2))
    fresh = race([lambda i=i: claim(f"key-{i}") for i in range(THREADS // 2)])

    no_errors(same + fresh)
    assert {(a.status_code, a.body["claimable"]) for a in same} == {(200, 1)}
    assert sorted(a.status_code for a in fresh) == [200] + [409] * (THREADS // 2 - 1)
    assert state(user, SEED_QUEST)[2:] == (2, 2)
    assert wallet(user) == (0, 20)


@pytest.mark.parametrize("round_no", range(2))
def test_catalog_writes_in_any_order_beside_sign_ins_and_claims_never_deadlock(
    round_no: int,
) -> None:
    extra = [
        new_quest(streak=2, duplication=50, auto_claim=True, item="gold", qty=1),
        new_quest(streak=4, duplication=50, auto_claim=False, item="diamond", qty=1),
    ]
    quest_ids = [SEED_QUEST, *extra]
    users = [new_user(f"busy{i}") for i in range(4)]
    for u in users:
        for e in store_sign_ins(u, 6):
            outbox.process_sign_in(e)
    pending = [e for u in users for e in store_sign_ins(u, 3)]

    def patch(order: list[int]) -> None:
        for q in order:
            with db.transaction() as s:
                catalog.update_quest(s, q, description=f"round {round_no} {order}")

    def claim(u: int) -> None:
        with db.transaction() as s:
            try:
                quests.claim(s, user_id=u, quest_id=SEED_QUEST)
            except Conflict:
                pass  # another racer took the last one

    jobs: list[Callable[[], Any]] = [
        lambda: patch(quest_ids),
        lambda: patch(quest_ids[::-1]),
        lambda: patch(quest_ids[1:] + quest_ids[:1]),
        lambda: patch(quest_ids[::-1][1:] + quest_ids[::-1][:1]),
        *[lambda u=u: claim(u) for u in users],
        *[lambda e=e: outbox.process_sign_in(e) for e in pending],
    ]
    results = race(jobs[:THREADS])
    no_errors(results)
    for u in users:
        # 9 sign-ins each: 9 // 3 = 3 > cap 2, 9 // 2 = 4, 9 // 4 = 2
        assert state(u, SEED_QUEST)[:3] == (0, 2, 2)
        assert state(u, extra[0]) == (1, 4, 4, 4)
        assert state(u, extra[1]) == (1, 2, 2, 0)
        assert wallet(u)[0] == 4
