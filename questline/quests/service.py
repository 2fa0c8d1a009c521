"""A player's claims, earned rewards and history (the quest view is in progress_view).
Never commits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from models import Event, EventType, RewardStatus, UserReward
from models.base import utcnow
from questline.catalog import repository as catalog_repository
from questline.errors import Conflict, DomainError, Invalid, NotFound
from questline.quests import history, repository
from questline.wallet import repository as wallet


def claim(session: Session, *, user_id: int, quest_id: int) -> dict[str, Any]:
    """Claim the oldest claimable reward of a quest (earned, not expired) and credit its
    whole bundle to the wallet, atomically. NotFound for an unknown quest, Conflict when
    nothing is claimable."""
    if catalog_repository.get_quest(session, quest_id) is None:
        raise NotFound("quest not found")
    now = utcnow()
    reward = repository.lock_oldest_claimable(session, user_id, quest_id, now=now)
    if reward is None:
        raise Conflict("nothing to claim")
    reward.status = RewardStatus.CLAIMED
    reward.claimed_at = now
    bundle = _bundle(reward)
    # Keyed by the reward row, so the wallet can never be paid twice for it.
    source = f"user_reward:{reward.user_reward_id}"
    wallet.credit(
        session,
        [wallet.Credit(user_id, line["item"], line["qty"], source) for line in bundle],
        now=now,
    )
    history.add(
        session,
        [
            history.reward_claimed_entry(
                user_id=user_id,
                quest_id=quest_id,
                user_reward_id=reward.user_reward_id,
                completion_no=reward.completion_no,
                items=bundle,
                now=now,
            )
        ],
    )
    session.flush()
    return {
        "quest_id": quest_id,
        "reward": {
            "reward_item": reward.reward_item,
            "reward_qty": reward.reward_qty,
            "items": bundle,
        },
        "balance": wallet.balances(session, user_id),
        "claimable": repository.count_claimable(session, user_id, quest_id, now=now),
    }


def _bundle(reward: UserReward) -> list[dict[str, Any]]:
    # Rows from before bundles existed hold only reward_item/reward_qty.
    if reward.items:
        return [{"item": str(i["item"]), "qty": int(i["qty"])} for i in reward.items]
    return [{"item": reward.reward_item, "qty": reward.reward_qty}]


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


def earned_reward_status(reward: UserReward, *, now: datetime) -> RewardStatus:
    """A reward's status as players see it: waiting past its expires_at is expired."""
    if (
        reward.status == RewardStatus.NOT_CLAIMED
        and reward.expires_at is not None
        and reward.expires_at <= now
    ):
        return RewardStatus.EXPIRED
    return RewardStatus(reward.status)


def earned_reward_view(reward: UserReward, *, now: datetime) -> dict[str, Any]:
    """One earned reward as /me/rewards shows it, with its bundle and expiry."""
    return {
        "user_reward_id": reward.user_reward_id,
        "quest_id": reward.quest_id,
        "reward_item": reward.reward_item,
        "reward_qty": reward.reward_qty,
        "items": _bundle(reward),
        "status": earned_reward_status(reward, now=now),
        "earned_at": reward.earned_at,
        "expires_at": reward.expires_at,
        "claimed_at": reward.claimed_at,
    }


def my_rewards(session: Session, *, user_id: int) -> list[dict[str, Any]]:
    """A player's earned rewards, newest first."""
    now = utcnow()
    return [earned_reward_view(r, now=now) for r in repository.list_rewards(session, user_id)]


def history_view(event: Event) -> dict[str, Any]:
    """One history item as /me/events shows it. A gameplay event's data holds its value,
    attrs and occurred_at; Questline's own entries keep the data they were recorded with."""
    data = event.data
    if event.occurred_at is not None and event.type != EventType.SIGN_IN:
        value = event.value if event.value is not None else Decimal(1)
        data = {
            "value": int(value) if value == value.to_integral_value() else float(value),
            "attrs": event.attrs or {},
            "occurred_at": event.occurred_at.isoformat(),
        }
    return {
        "event_id": event.event_id,
        "type": event.type,
        "quest_id": event.quest_id,
        "data": data,
        "created_at": event.created_at,
    }


def my_events(
    session: Session, *, user_id: int, limit: int, before: int | None
) -> list[dict[str, Any]]:
    """A player's history, gameplay events included, newest first, older than event
    `before` when given."""
    return [
        history_view(e)
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
