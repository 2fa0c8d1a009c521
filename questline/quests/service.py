"""A player's quests: progress view, claims, earned rewards, history. Never commits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from models import UserReward
from models.base import utcnow
from models.progress import RewardStatus
from questline.catalog import repository as catalog_repository
from questline.catalog import service as catalog
from questline.errors import Conflict, DomainError, Invalid, NotFound
from questline.quests import repository
from questline.quests.rules import reward_claimed_event
from questline.users import repository as users_repository


def quest_status(*, curr_streak: int, completions: int, duplication: int, claimable: int) -> str:
    if claimable > 0:
        return "claimable"
    if completions >= duplication:
        return "completed"
    if curr_streak == 0 and completions == 0:
        return "not_started"
    return "in_progress"


def my_quests(session: Session, *, user_id: int) -> list[dict[str, Any]]:
    """One item per active quest, started or not, ordered by quest_id."""
    progress = repository.progress_for_user(session, user_id)
    counts = repository.reward_counts(session, user_id)
    items = []
    for quest in catalog.list_quests(session):
        qid = quest["quest_id"]
        row = progress.get(qid)
        curr_streak = row.curr_streak if row else 0
        completions = row.completions if row else 0
        claimable = counts.get((qid, RewardStatus.NOT_CLAIMED), 0)
        items.append(
            {
                "quest_id": qid,
                "name": quest["name"],
                "streak": quest["streak"],
                "duplication": quest["duplication"],
                "auto_claim": quest["auto_claim"],
                "reward": {
                    "reward_item": quest["reward"]["reward_item"],
                    "reward_qty": quest["reward"]["reward_qty"],
                },
                "curr_streak": curr_streak,
                "completions": completions,
                "claimed": counts.get((qid, RewardStatus.CLAIMED), 0),
                "claimable": claimable,
                "status": quest_status(
                    curr_streak=curr_streak,
                    completions=completions,
                    duplication=quest["duplication"],
                    claimable=claimable,
                ),
            }
        )
    return items


def claim(session: Session, *, user_id: int, quest_id: int) -> dict[str, Any]:
    """Claim the oldest earned reward of a quest and credit the wallet, atomically."""
    if catalog_repository.get_quest(session, quest_id) is None:
        raise NotFound("quest not found")
    reward = repository.lock_oldest_unclaimed(session, user_id, quest_id)
    if reward is None:
        raise Conflict("nothing to claim")
    now = utcnow()
    reward.status = RewardStatus.CLAIMED
    reward.claimed_at = now
    gold, diamond = users_repository.credit_wallet(
        session, user_id, reward_item=reward.reward_item, reward_qty=reward.reward_qty
    )
    session.flush()
    repository.add_events(
        session,
        [
            reward_claimed_event(
                user_id=user_id,
                quest_id=quest_id,
                at=now,
                user_reward_id=reward.user_reward_id,
                completion_no=reward.completion_no,
                reward_item=reward.reward_item,
                reward_qty=reward.reward_qty,
                auto_claim=False,
            )
        ],
    )
    return {
        "quest_id": quest_id,
        "reward": {"reward_item": reward.reward_item, "reward_qty": reward.reward_qty},
        "balance": {"gold": gold, "diamond": diamond},
        "claimable": repository.count_unclaimed(session, user_id, quest_id),
    }


@dataclass(frozen=True)
class StoredAnswer:
    status_code: int
    body: dict[str, Any]


def claim_once(session: Session, *, user_id: int, quest_id: int, key: str) -> StoredAnswer:
    """Claim under an Idempotency-Key: the first answer, success or error, is kept and
    replayed for every retry with the same key."""
    fingerprint = f"claim:{quest_id}"
    stored = repository.reserve_idempotency_key(session, user_id, key, fingerprint, now=utcnow())
    if stored is not None:
        if stored.fingerprint != fingerprint:
            raise Invalid("Idempotency-Key was already used for another request")
        return StoredAnswer(stored.status_code, stored.response)
    try:
        answer = StoredAnswer(200, claim(session, user_id=user_id, quest_id=quest_id))
    except DomainError as exc:
        # claim() raises before it changes anything, so the error is the whole answer.
        answer = StoredAnswer(exc.status_code, {"detail": exc.detail})
    repository.store_idempotent_response(session, user_id, key, answer.status_code, answer.body)
    return answer


def earned_reward_view(reward: UserReward) -> dict[str, Any]:
    """One earned reward as /me/rewards shows it."""
    return {
        "user_reward_id": reward.user_reward_id,
        "quest_id": reward.quest_id,
        "reward_item": reward.reward_item,
        "reward_qty": reward.reward_qty,
        "status": reward.status,
        "earned_at": reward.earned_at,
        "claimed_at": reward.claimed_at,
    }


def my_rewards(session: Session, *, user_id: int) -> list[dict[str, Any]]:
    """A player's earned rewards, newest first."""
    return [earned_reward_view(r) for r in repository.list_rewards(session, user_id)]


def my_events(
    session: Session, *, user_id: int, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """A player's history, newest first, older than event `before` when given."""
    return [
        {
            "event_id": e.event_id,
            "type": e.type,
            "quest_id": e.quest_id,
            "data": e.data,
            "created_at": e.created_at,
        }
        for e in repository.list_events(session, user_id, limit=limit, before=before)
    ]


def sign_in_status(session: Session, *, user_id: int, sign_in_id: int) -> dict[str, Any]:
    """Whether a player's sign-in is applied yet; NotFound for anyone else's."""
    event = repository.get_sign_in(session, user_id, sign_in_id)
    if event is None:
        raise NotFound("sign-in not found")
    return {
        "sign_in_id": event.event_id,
        "status": "processed" if event.processed_at is not None else "pending",
        "created_at": event.created_at,
        "processed_at": event.processed_at,
    }
