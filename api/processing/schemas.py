from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class RewardAmount(BaseModel):
    reward_item: Literal["gold", "diamond"]
    reward_qty: int


class MyQuest(BaseModel):
    quest_id: int
    name: str
    streak: int
    duplication: int
    auto_claim: bool
    reward: RewardAmount
    curr_streak: int
    completions: int
    claimed: int
    claimable: int
    status: Literal["not_started", "in_progress", "claimable", "completed"]


class Balance(BaseModel):
    gold: int
    diamond: int


class ClaimOut(BaseModel):
    quest_id: int
    reward: RewardAmount
    balance: Balance
    claimable: int


class MyReward(BaseModel):
    user_reward_id: int
    quest_id: int
    reward_item: Literal["gold", "diamond"]
    reward_qty: int
    status: Literal["not_claimed", "claimed"]
    earned_at: datetime
    claimed_at: datetime | None


class MyEvent(BaseModel):
    event_id: int
    type: Literal["sign_in", "quest_progress", "quest_completed", "reward_earned", "reward_claimed"]
    quest_id: int | None
    data: dict[str, Any]
    created_at: datetime


class SignInStatus(BaseModel):
    sign_in_id: int
    status: Literal["pending", "processed"]
    created_at: datetime
    processed_at: datetime | None
