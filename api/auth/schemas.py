from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.fields import EncodableStr, StorableStr
from models.users import UserStatus
from questline.users.repository import USER_NAME_RE

# The one definition of a valid user name, shared with the domain and the CLI.
USER_NAME_PATTERN = USER_NAME_RE.pattern


class SignupIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_name: str = Field(pattern=USER_NAME_PATTERN, description="3-32 of A-Z a-z 0-9 _ . -")
    password: EncodableStr = Field(min_length=8, max_length=128)


class SignupOut(BaseModel):
    user_id: int
    user_name: str
    status: UserStatus
    gold: int
    diamond: int


class LoginIn(BaseModel):
    user_name: EncodableStr = Field(max_length=64)
    password: EncodableStr = Field(max_length=128)


class RefreshIn(BaseModel):
    refresh_token: EncodableStr = Field(min_length=1, max_length=512)


class SignInOut(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    refresh_token: str
    user_id: int
    sign_in_id: int


class UserOut(SignupOut):
    """A user with the wallet, as /auth/me and the ban route answer. gold and diamond
    are read from the wallet; `wallet` holds every item, as GET /me/wallet's balances."""

    created_at: datetime
    last_login_at: datetime | None
    timezone: str = Field(description="IANA zone stamped on the user's events")
    wallet: dict[str, int] = Field(description="item -> balance; gold and diamond always")


class TimezoneIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timezone: StorableStr = Field(
        min_length=1, max_length=64, description="An IANA zone name, e.g. Europe/Paris"
    )


ScopeName = Literal["events:write", "events:backfill"]


class ApiKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: StorableStr = Field(min_length=1, max_length=100, pattern=r"\S")
    scopes: list[ScopeName] = Field(min_length=1, max_length=2)


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    key_id: int
    name: str
    scopes: list[ScopeName]
    created_at: datetime


class NewApiKeyOut(ApiKeyOut):
    api_key: str = Field(description="The secret: shown only in this answer, stored only hashed")
