from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from questline.events import validation as rules


class RewardAmount(BaseModel):
    """v1's reward of a quest: the first item of its bundle."""

    reward_item: str
    reward_qty: int


class MyQuest(BaseModel):
    """One quest as the player sees it now (API.md "GET /me/quests" and "Player views").

    v1's fields keep their meaning: curr_streak is this period's progress (count, sum)
    or the live streak (consecutive), completions are lifetime. v2's: progress,
    completions_this_period and period_ends_at are those of the period holding now in
    the player's zone; rewards is the bundle; expires_at is when the oldest claimable
    reward expires."""

    quest_id: int
    name: str
    streak: int
    duplication: int | None
    auto_claim: bool
    reward: RewardAmount
    curr_streak: int | float
    completions: int
    claimed: int
    claimable: int
    status: Literal[
        "not_started",
        "in_progress",
        "claimable",
        "completed",
        "locked",
        "upcoming",
        "done_for_period",
        "ended",
    ]
    target: int
    measure: Literal["count", "sum", "consecutive"]
    period: Literal["none", "day", "week", "month"]
    progress: int | float
    completions_this_period: int
    period_ends_at: datetime | None
    best_streak: int
    rewards: list[BundleItem]
    expires_at: datetime | None


class BundleItem(BaseModel):
    item: str
    qty: int


class ClaimedReward(BaseModel):
    """The claimed bundle; reward_item/reward_qty are its first item (v1)."""

    reward_item: str
    reward_qty: int
    items: list[BundleItem]


class Balance(BaseModel):
    """Every item of the wallet: gold and diamond always, then any other item held."""

    model_config = ConfigDict(
        extra="allow", json_schema_extra={"additionalProperties": {"type": "integer"}}
    )
    gold: int
    diamond: int


class ClaimOut(BaseModel):
    quest_id: int
    reward: ClaimedReward
    balance: Balance
    claimable: int


class MyReward(BaseModel):
    user_reward_id: int
    quest_id: int
    reward_item: str
    reward_qty: int
    items: list[BundleItem]
    status: Literal["not_claimed", "claimed", "expired"] = Field(
        description="expired: not claimed before expires_at, and never claimable"
    )
    earned_at: datetime
    expires_at: datetime | None
    claimed_at: datetime | None


class MyEvent(BaseModel):
    event_id: int
    type: str = Field(
        description="sign_in, quest_progress, quest_completed, reward_earned, reward_claimed, "
        "or a gameplay event's own type"
    )
    quest_id: int | None
    data: dict[str, Any] = Field(description="for a gameplay event: value, attrs and occurred_at")
    created_at: datetime


class SignInStatus(BaseModel):
    sign_in_id: int
    status: Literal["pending", "processed"]
    created_at: datetime
    processed_at: datetime | None


# --- gameplay events (game servers, API key) --------------------------------

EVENT_STATUSES = Literal["accepted", "duplicate"]


class EventResult(BaseModel):
    idempotency_key: str
    event_id: int
    status: EVENT_STATUSES = Field(
        description="duplicate: an event with this user and key was stored before (its id)"
    )


class EventResultsOut(BaseModel):
    results: list[EventResult] = Field(description="One per event, in request order")


class EventStatusOut(BaseModel):
    event_id: int
    user_id: int
    type: str
    status: Literal["pending", "processed"]
    occurred_at: datetime
    created_at: datetime
    processed_at: datetime | None


def event_batch_schema() -> dict[str, Any]:
    """The JSON Schema of a POST /events body, for the OpenAPI document (the rules
    themselves are checked by questline.events.validation)."""
    return {
        "type": "object",
        "required": ["events"],
        "additionalProperties": False,
        "properties": {
            "events": {
                "type": "array",
                "minItems": 1,
                "maxItems": rules.MAX_BATCH,
                "items": {
                    "type": "object",
                    "required": list(rules.REQUIRED),
                    "additionalProperties": False,
                    "properties": {
                        "user_id": {"type": "integer", "minimum": 1},
                        "type": {
                            "type": "string",
                            "pattern": "^[a-z0-9_.:-]{1,64}$",
                            "description": "not sign_in, quest_* or reward_* (history names)",
                        },
                        "value": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": int(rules.MAX_VALUE),
                            "default": 1,
                            "description": f"at most {rules.VALUE_DECIMALS} decimal places",
                        },
                        "attrs": {
                            "type": "object",
                            "maxProperties": rules.MAX_ATTRS,
                            "additionalProperties": {
                                "anyOf": [
                                    {"type": "string", "maxLength": rules.MAX_ATTR_STRING},
                                    {"type": "number"},
                                    {"type": "boolean"},
                                ]
                            },
                            "description": f"names of 1-{rules.MAX_ATTR_NAME} characters",
                        },
                        "occurred_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "with a UTC offset; default: when stored. At most "
                            "60 s ahead; at most QUESTLINE_EVENT_MAX_AGE_SECONDS old unless "
                            "the key has events:backfill",
                        },
                        "idempotency_key": {
                            "type": "string",
                            "minLength": 1,
                            "maxLength": rules.MAX_KEY,
                            "description": "printable; per user, a retry returns the first "
                            "event's id",
                        },
                    },
                },
            }
        },
    }


class WalletOut(BaseModel):
    balances: dict[str, int] = Field(description="item -> balance; gold and diamond always")
