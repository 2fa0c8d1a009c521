from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.fields import StorableStr

# Storable text (no NUL, no lone surrogates), and no blank names.
Name = Annotated[StorableStr, Field(min_length=1, max_length=100, pattern=r"\S")]
Description = Annotated[StorableStr, Field(max_length=2000)]
Count = Annotated[int, Field(ge=1, le=1_000_000)]
Quantity = Annotated[int, Field(ge=1, le=1_000_000_000)]
RewardId = Annotated[int, Field(ge=1, le=2**63 - 1)]


class RewardIn(BaseModel):
    # strict: a JSON "no" or "1" is not a bool or an int; lax coercion would
    # silently turn a typo into a catalog change.
    model_config = ConfigDict(extra="forbid", strict=True)
    reward_name: Name
    reward_item: Literal["gold", "diamond"]
    reward_qty: Quantity


class RewardOut(BaseModel):
    reward_id: int
    reward_name: str
    reward_item: Literal["gold", "diamond"]
    reward_qty: int


class QuestIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name
    description: Description = ""
    auto_claim: bool = False
    streak: Count
    duplication: Count
    reward_id: RewardId


class QuestPatch(BaseModel):
    """Any subset of a quest's fields, plus `active`. Fields may not be null."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: Name | None = None
    description: Description | None = None
    auto_claim: bool | None = None
    streak: Count | None = None
    duplication: Count | None = None
    reward_id: RewardId | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> QuestPatch:
        nulls = [f for f in self.model_fields_set if getattr(self, f) is None]
        if nulls:
            raise ValueError(f"fields may not be null: {', '.join(sorted(nulls))}")
        return self

    def changes(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in self.model_fields_set}


class QuestOut(BaseModel):
    quest_id: int
    name: str
    description: str
    auto_claim: bool
    streak: int
    duplication: int
    active: bool
    reward: RewardOut
