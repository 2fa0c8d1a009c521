"""Bodies of the Quest Catalog routes.

Only the shape is checked here (which fields, JSON types of the fields the engine does
not read). Every rule of a quest definition or a reward bundle is the engine's
(questline.engine.parse_quest / parse_rewards), and every rule on names and texts is
the catalog service's, so the HTTP routes and `questline quests apply` refuse exactly
the same things with the same messages. Fields marked SkipValidation keep their JSON
type in the OpenAPI document but reach the engine as sent, so that a wrong type is
refused by the engine's message naming the field (not coerced, not refused twice).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, model_validator

RewardId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class RewardLine(BaseModel):
    """One line of a bundle."""

    item: str = Field(description="1-32 of a-z 0-9 _, e.g. gold, diamond, chest_epic")
    qty: int = Field(description=">= 1")


class RewardIn(BaseModel):
    """A bundle (`items`), or v1's single item (`reward_item`, `reward_qty`); both may be
    given when they agree (reward_item/reward_qty = the first line)."""

    # strict: a JSON "no" or "1" is not a bool or an int; lax coercion would
    # silently turn a typo into a catalog change.
    model_config = ConfigDict(extra="forbid", strict=True)
    reward_name: str = Field(description="1-100 characters, not blank")
    items: Annotated[list[RewardLine] | None, SkipValidation] = Field(
        default=None, description="1-10 lines"
    )
    reward_item: Annotated[str | None, SkipValidation] = None
    reward_qty: Annotated[int | None, SkipValidation] = None

    def fields(self) -> dict[str, Any]:
        """The fields sent, as sent."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class RewardOut(BaseModel):
    reward_id: int
    reward_name: str
    reward_item: str
    reward_qty: int
    items: list[RewardLine]


Measure = Literal["count", "sum", "consecutive"]
Period = Literal["none", "day", "week", "month"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class _QuestDefinition(BaseModel):
    """The quest fields the engine reads (API.md "Quests, general form"); see the module
    docstring for why they are not validated here."""

    model_config = ConfigDict(extra="forbid", strict=True)
    auto_claim: Annotated[bool | None, SkipValidation] = None
    target: Annotated[int | None, SkipValidation] = Field(
        default=None, description="completes the quest once; v1's `streak` is the same number"
    )
    streak: Annotated[int | None, SkipValidation] = Field(default=None, description="= target")
    duplication: Annotated[int | None, SkipValidation] = Field(
        default=None, description="completions allowed in all; null: no limit"
    )
    trigger: Annotated[dict[str, Any] | None, SkipValidation] = Field(
        default=None, description='{"event": type, "where": {attr: condition}}'
    )
    measure: Annotated[Measure | None, SkipValidation] = None
    period: Annotated[Period | None, SkipValidation] = None
    reset_at: Annotated[str | None, SkipValidation] = Field(default=None, description="HH:MM")
    week_starts_on: Annotated[Weekday | None, SkipValidation] = None
    timezone: Annotated[str | None, SkipValidation] = Field(
        default=None, description='"user", "UTC" or an IANA name'
    )
    max_per_period: Annotated[int | None, SkipValidation] = None
    grace_periods: Annotated[int | None, SkipValidation] = None
    requires: Annotated[list[int] | None, SkipValidation] = None
    starts_at: Annotated[datetime | None, SkipValidation] = None
    ends_at: Annotated[datetime | None, SkipValidation] = None
    claim_within_seconds: Annotated[int | None, SkipValidation] = None

    def fields(self) -> dict[str, Any]:
        """The fields sent, as sent (absent ones take the engine's defaults)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class QuestIn(_QuestDefinition):
    """A new quest: `name`, `reward_id` and `target` (or v1's `streak`) are required."""

    name: str = Field(description="1-100 characters, not blank, unique")
    description: str = ""
    reward_id: RewardId
    active: bool = True


class QuestPatch(_QuestDefinition):
    """Any subset of a quest's fields. name, description, reward_id and active may not be
    null; the definition fields may be null where the quest table allows it."""

    name: str | None = None
    description: str | None = None
    reward_id: RewardId | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> QuestPatch:
        fixed = ("name", "description", "reward_id", "active")
        nulls = [f for f in fixed if f in self.model_fields_set and getattr(self, f) is None]
        if nulls:
            raise ValueError(f"fields may not be null: {', '.join(sorted(nulls))}")
        return self


class QuestOut(BaseModel):
    quest_id: int
    name: str
    description: str
    auto_claim: bool
    streak: int
    duplication: int | None
    active: bool
    reward: RewardOut
    trigger: dict[str, Any]
    measure: Measure
    target: int
    period: Period
    reset_at: str
    week_starts_on: Weekday
    timezone: str
    max_per_period: int | None
    grace_periods: int
    requires: list[int]
    starts_at: datetime | None
    ends_at: datetime | None
    claim_within_seconds: int | None
