"""The engine's shell (questline.quests.rules.apply_inputs) on sign-ins: the seed quest
and v1-shaped quests behave exactly as v1, on real PostgreSQL rows.

Most tests insert a user and sign-in events and apply them in one uncommitted
transaction, so no worker can take the events first; the transaction is rolled
back at the end.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session

from models import Event, EventType
from questline import outbox
from questline.catalog import service as catalog
from questline.config import get_settings
from questline.infra import db
from questline.quests.rules import apply_inputs
from questline.wallet.repository import balances
from tests import factories as f

SEED_QUEST = 1  # sign-in-three-times: streak 3, duplication 2, 10 diamonds, claimed by hand


def sign_in(session: Session, user_id: int, n: int = 1) -> list[int]:
    """Store n sign-ins and apply them, one call per sign-in as the task does."""
    ids = f.add_sign_ins(session, user_id, n)
    for event_id in ids:
        applied = apply_inputs(session, event_ids=[event_id], wait=True)
        assert applied.inputs == [event_id]
    return ids


def quest_events(
    session: Session, user_id: int, sign_in_id: int, quest_id: int | None = None
) -> list[str]:
    """Types of the quest events one sign-in produced (for one quest, or all)."""
    return [
        e.type
        for e in f.events(session, user_id)
        if e.type != EventType.SIGN_IN
        and e.data.get("sign_in_id") == sign_in_id
        and quest_id in (None, e.quest_id)
    ]


def test_a_sign_in_advances_the_streak_and_is_marked_processed(session: Session) -> None:
    user = f.add_user(session)
    [event_id] = sign_in(session, user.user_id)

    assert f.progress(session, user.user_id, SEED_QUEST) == (1, 0)
    event = session.get(Event, event_id, populate_existing=True)
    assert event is not None
    assert event.processed_at is not None
    [progress] = f.events(session, user.user_id, EventType.QUEST_PROGRESS)
    assert progress.quest_id == SEED_QUEST
    assert progress.data == {"sign_in_id": event_id, "event_id": event_id, "curr_streak": 1}
    assert f.rewards(session, user.user_id, SEED_QUEST) == []


def test_the_streak_completes_the_quest_resets_and_waits_for_a_manual_claim(
    session: Session,
) -> None:
    user = f.add_user(session)
    ids = sign_in(session, user.user_id, 3)

    assert f.progress(session, user.user_id, SEED_QUEST) == (0, 1)
    assert quest_events(session, user.user_id, ids[2]) == [
        "quest_progress",
        "quest_completed",
        "reward_earned",
    ]
    [reward] = f.rewards(session, user.user_id, SEED_QUEST)
    assert (reward.completion_no, reward.reward_item, reward.reward_qty) == (1, "diamond", 10)
    assert (reward.status, reward.claimed_at) == ("not_claimed", None)
    assert balances(session, user.user_id) == {"gold": 0, "diamond": 0}  # claimed by hand

    sign_in(session, user.user_id)  # the streak starts over after a completion
    assert f.progress(session, user.user_id, SEED_QUEST) == (1, 1)


def test_at_the_duplication_cap_nothing_changes_but_the_sign_in_is_processed(
    session: Session,
) -> None:
    user = f.add_user(session)
    sign_in(session, user.user_id, 6)
    assert f.progress(session, user.user_id, SEED_QUEST) == (0, 2)
    history_before = len(f.events(session, user.user_id))

    [capped] = sign_in(session, user.user_id)

    assert f.progress(session, user.user_id, SEED_QUEST) == (0, 2)
    assert quest_events(session, user.user_id, capped) == []
    new = f.events(session, user.user_id)[history_before:]
    assert [(e.event_id, e.type) for e in new] == [(capped, "sign_in")]
    assert new[0].processed_at is not None
    assert len(f.rewards(session, user.user_id, SEED_QUEST)) == 2


def test_auto_claim_credits_the_wallet_in_the_grant_transaction(session: Session) -> None:
    quest = f.add_quest(session, streak=2, duplication=2, auto_claim=True, item="gold", qty=7)
    user = f.add_user(session)
    session.commit()  # the user and quest exist for the other connection below
    ids = f.add_sign_ins(session, user.user_id, 2)
    for event_id in ids:
        apply_inputs(session, event_ids=[event_id])

    # Before commit another connection sees neither the reward nor the credit ...
    with db.session_factory()() as other:
        assert balances(other, user.user_id)["gold"] == 0
        assert f.rewards(other, user.user_id, quest.quest_id) == []
    session.commit()
    # ... and after it, both.
    with db.session_factory()() as other:
        assert balances(other, user.user_id)["gold"] == 7
        [reward] = f.rewards(other, user.user_id, quest.quest_id)
        assert reward.status == "claimed"
        assert reward.claimed_at is not None
        assert quest_events(other, user.user_id, ids[1], quest.quest_id) == [
            "quest_progress",
            "quest_completed",
            "reward_earned",
            "reward_claimed",
        ]
        [claimed] = f.events(other, user.user_id, EventType.REWARD_CLAIMED)
        assert claimed.data["auto_claim"] is True
        assert (claimed.data["reward_item"], claimed.data["reward_qty"]) == ("gold", 7)


def test_several_active_quests_advance_independently(session: Session) -> None:
    every_other = f.add_quest(session, streak=2, duplication=3, item="gold", qty=5)
    five_auto = f.add_quest(
        session, streak=5, duplication=1, auto_claim=True, item="diamond", qty=3
    )
    user = f.add_user(session)

    sign_in(session, user.user_id, 5)

    assert f.progress(session, user.user_id, SEED_QUEST) == (2, 1)
    assert f.progress(session, user.user_id, every_other.quest_id) == (1, 2)
    assert f.progress(session, user.user_id, five_auto.quest_id) == (0, 1)
    # Only the auto-claim quest pays at once.
    assert balances(session, user.user_id) == {"gold": 0, "diamond": 3}
    assert [r.status for r in f.rewards(session, user.user_id, every_other.quest_id)] == [
        "not_claimed",
        "not_claimed",
    ]

    sign_in(session, user.user_id, 5)  # five_auto is at its cap; the others go on
    assert f.progress(session, user.user_id, five_auto.quest_id) == (0, 1)
    assert f.progress(session, user.user_id, every_other.quest_id) == (0, 3)
    assert f.progress(session, user.user_id, SEED_QUEST) == (0, 2)
    assert balances(session, user.user_id)["diamond"] == 3


def test_inactive_quests_are_ignored(session: Session) -> None:
    hidden = f.add_quest(session, streak=1, duplication=5, auto_claim=True, active=False)
    user = f.add_user(session)

    sign_in(session, user.user_id, 2)

    assert f.progress(session, user.user_id, hidden.quest_id) == (0, 0)
    assert all(e.quest_id != hidden.quest_id for e in f.events(session, user.user_id))
    assert balances(session, user.user_id)["gold"] == 0
    assert f.progress(session, user.user_id, SEED_QUEST) == (2, 0)


def test_one_batch_applies_many_users_sign_ins_in_order(session: Session) -> None:
    ann, bob = f.add_user(session), f.add_user(session)
    ids = f.add_sign_ins(session, ann.user_id, 3) + f.add_sign_ins(session, bob.user_id, 2)

    applied = apply_inputs(session, event_ids=ids)

    assert sorted(applied.inputs) == sorted(ids)
    assert applied.rewards_earned == 1
    assert f.progress(session, ann.user_id, SEED_QUEST) == (0, 1)
    assert f.progress(session, bob.user_id, SEED_QUEST) == (2, 0)


def test_a_catalog_change_applies_to_sign_ins_stored_after_it(session: Session) -> None:
    user = f.add_user(session)
    sign_in(session, user.user_id, 1)
    catalog.update_quest(session, SEED_QUEST, streak=1, duplication=4)

    sign_in(session, user.user_id, 2)

    # A count quest completes at most once per event and starts again from 0 (v1's rule 2,
    # kept by the engine): progress stored above a lowered target does not complete twice.
    assert f.progress(session, user.user_id, SEED_QUEST) == (0, 2)
    assert [r.completion_no for r in f.rewards(session, user.user_id, SEED_QUEST)] == [1, 2]


def test_process_sign_in_applies_once_however_often_it_is_called(session: Session) -> None:
    user = f.add_user(session)
    [event_id] = f.add_sign_ins(session, user.user_id)
    f.keep_from_sweeper(session, [event_id])
    session.commit()

    first = outbox.process_sign_in(event_id)
    again = outbox.process_sign_in(event_id)

    assert first.inputs == [event_id]
    assert again.inputs == []
    assert f.progress(session, user.user_id, SEED_QUEST) == (1, 0)
    assert len(f.events(session, user.user_id, EventType.QUEST_PROGRESS)) == 1


def test_without_the_processed_guard_a_second_delivery_would_double_apply(
    session: Session,
) -> None:
    # The negative control: it is the guard, not luck, that keeps duplicates out.
    user = f.add_user(session)
    [event_id] = sign_in(session, user.user_id)
    apply_inputs(session, event_ids=[event_id], guard=False)
    assert f.progress(session, user.user_id, SEED_QUEST) == (2, 0)


@pytest.mark.usefixtures("worker")
def test_a_streak_change_over_http_applies_to_the_next_sign_in(
    admin: Any, make_player: Any
) -> None:
    alice = make_player("alice")
    alice.wait_processed(alice.login()["sign_in_id"])
    assert (alice.quest()["curr_streak"], alice.quest()["completions"]) == (1, 0)

    r = admin.client.patch("/quests/1", json={"streak": 2}, headers=admin.headers)
    assert r.status_code == 200, r.text
    assert r.json()["streak"] == 2

    # Stored after the PATCH returned: under streak 3 it would only progress.
    alice.wait_processed(alice.login()["sign_in_id"])
    quest = alice.quest()
    assert (quest["streak"], quest["curr_streak"], quest["completions"]) == (2, 0, 1)
    assert quest["status"] == "claimable"


# revive() sends the sign-in a message: a running worker would apply it before this test does.
@pytest.mark.usefixtures("no_worker")
def test_failures_dead_letter_an_event_at_max_attempts_and_then_stop_counting(
    session: Session,
) -> None:
    max_attempts = get_settings().max_attempts
    user = f.add_user(session)
    [event_id] = f.add_sign_ins(session, user.user_id)
    f.keep_from_sweeper(session, [event_id])
    session.commit()
    failure = RuntimeError("the rule failed")

    for _ in range(max_attempts - 1):
        outbox.count_failure([event_id], failure)
    event = session.get(Event, event_id, populate_existing=True)
    assert event is not None
    assert (event.attempts, event.dead_at) == (max_attempts - 1, None)

    outbox.count_failure([event_id], failure)
    session.refresh(event)
    dead_at = event.dead_at
    assert event.attempts == max_attempts
    assert dead_at is not None
    assert event.last_error == "RuntimeError: the rule failed"
    assert outbox.stats().dead == 1
    assert outbox.process_sign_in(event_id).inputs == []  # dead events are not applied

    # A second attempt that failed at the same time is not counted on a dead event.
    outbox.count_failure([event_id], failure)
    session.refresh(event)
    assert (event.attempts, event.dead_at) == (max_attempts, dead_at)

    assert outbox.revive(event_id)
    session.refresh(event)
    assert (event.attempts, event.dead_at, event.last_error) == (0, None, None)
    assert outbox.process_sign_in(event_id).inputs == [event_id]
    assert not outbox.revive(event_id)  # processed: nothing to revive
