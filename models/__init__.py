"""SQLAlchemy 2 models: the one data model every service and worker shares."""

from models.base import Base
from models.catalog import Quest, Reward
from models.events import Event, EventType
from models.progress import IdempotencyKey, UserQuestProgress, UserReward
from models.users import RefreshToken, User

__all__ = [
    "Base",
    "Event",
    "EventType",
    "IdempotencyKey",
    "Quest",
    "RefreshToken",
    "Reward",
    "User",
    "UserQuestProgress",
    "UserReward",
]
