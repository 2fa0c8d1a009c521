"""A credited reward is recorded the same way on every path that credits one: a claim,
an auto-claim quest completed by a sign-in, and waiting rewards settled when a quest
turns auto-claim (one builder, questline.quests.history.reward_claimed_entry)."""

from __future__ import annotations

import typing

from sqlalchemy.orm import Session

from api.processing.schemas import MyReward
from models import EventType
from models.progress import RewardStatus
from questline.catalog import service as catalog
from questline.quests import service as quests
from questline.quests.rules import apply_sign_ins
from tests import factories as f

# What every reward_claimed entry says about the reward, whichever path credited it.
COMMON = {"user_reward_id", "completion_no", "reward_item", "reward_qty", "items"}


def claimed_events(session: Session, user_id: int) -> list[dict[str, object]]:
    return [e.data for e in f.events(session, user_id, EventType.REWARD_CLAIMED)]


def test_every_path_records_the_same_reward_claimed_event(session: Session) -> None:
    by_hand = f.add_quest(session, streak=1, duplication=3, item="gold", qty=2)
    auto = f.add_quest(session, streak=1, duplication=3, auto_claim=True, item="diamond", qty=5)
    user_id = f.add_user(session).user_id
    [sign_in] = f.add_sign_ins(session, user_id)
    apply_sign_ins(session, event_ids=[sign_in])
    [auto_claimed] = claimed_events(session, user_id)
    [auto_reward] = f.rewards(session, user_id, auto.quest_id)
    assert auto_claimed == {
        "event_id": sign_in,
        "sign_in_id": sign_in,
        "user_reward_id": auto_reward.user_reward_id,
        "completion_no": 1,
        "reward_item": "diamond",
        "reward_qty": 5,
        "items": [{"item": "diamond", "qty": 5}],
        "auto_claim": True,
    }

    quests.claim(session, user_id=user_id, quest_id=by_hand.quest_id)
    [reward, *_] = f.rewards(session, user_id, by_hand.quest_id)
    claimed = claimed_events(session, user_id)[-1]
    assert claimed == {
        "user_reward_id": reward.user_reward_id,
        "completion_no": 1,
        "reward_item": "gold",
        "reward_qty": 2,
        "items": [{"item": "gold", "qty": 2}],
    }

    apply_sign_ins(session, event_ids=f.add_sign_ins(session, user_id))  # earns one to wait
    catalog.update_quest(session, by_hand.quest_id, auto_claim=True)
    settled = claimed_events(session, user_id)[-1]
    assert set(settled) == COMMON | {"auto_claim"}
    assert (settled["completion_no"], settled["auto_claim"]) == (2, True)
    assert all(COMMON <= set(data) for data in claimed_events(session, user_id))


def test_reward_statuses_are_the_ones_the_contract_and_the_schema_know() -> None:
    contract = set(typing.get_args(MyReward.model_fields["status"].annotation))
    assert {status.value for status in RewardStatus} == contract
    assert contract == {"not_claimed", "claimed", "expired"}
