"""SQLAlchemy 2 models: the one data model every service and worker shares."""

from models.base import Base
from models.catalog import Quest, Reward
from models.credentials import ApiKey
from models.events import Event, EventType
from models.progress import (
    IdempotencyKey,
    QuestPeriodProgress,
    RewardStatus,
    UserQuestProgress,
    UserReward,
)
from models.users import RefreshToken, User
from models.wallet import LedgerEntry, WalletBalance
from models.webhooks import DeliveryStatus, Webhook, WebhookDelivery, WebhookEventType

__all__ = [
    "ApiKey",
    "DeliveryStatus",
    "Base",
    "Event",
    "EventType",
    "IdempotencyKey",
    "LedgerEntry",
    "QuestPeriodProgress",
    "Quest",
    "RefreshToken",
    "Reward",
    "RewardStatus",
    "User",
    "UserQuestProgress",
    "UserReward",
    "WalletBalance",
    "Webhook",
    "WebhookDelivery",
    "WebhookEventType",
]
