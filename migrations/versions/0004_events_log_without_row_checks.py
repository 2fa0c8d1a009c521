"""the events log without per-row foreign-key checks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 22:10:00

The events table is the busiest append-only table: each gameplay event applied writes
a dozen history rows into it. Every row paid a foreign-key check on users, quests and
api_keys (a trigger, an index probe and a row share lock on the parent each), which
measured at more than half of the cost of inserting history. Its writers already
guarantee what the keys checked: ingestion stores events only for users it has read,
the engine writes history for users and quests whose rows it holds locked, users and
quests are never deleted (a quest leaves with active = false), and API keys are
revoked, never deleted. The tables that hold state (progress, periods, rewards,
wallets, the ledger) keep their keys.

The idempotency key index becomes partial: history rows and sign-ins have no key and
no longer each add an entry to it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

WITH_KEY = sa.text("idempotency_key IS NOT NULL")
FOREIGN_KEYS = (
    ("fk_events_user_id_users", "users", "user_id", "user_id"),
    ("fk_events_quest_id_quests", "quests", "quest_id", "quest_id"),
    ("fk_events_api_key_id_api_keys", "api_keys", "api_key_id", "key_id"),
)


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        for name, _, _, _ in FOREIGN_KEYS:
            batch.drop_constraint(name, type_="foreignkey")
    op.drop_index("uq_events_user_idempotency_key", table_name="events")
    op.create_index(
        "uq_events_user_idempotency_key",
        "events",
        ["user_id", "idempotency_key"],
        unique=True,
        postgresql_where=WITH_KEY,
        sqlite_where=WITH_KEY,
    )


def downgrade() -> None:
    op.drop_index("uq_events_user_idempotency_key", table_name="events")
    op.create_index(
        "uq_events_user_idempotency_key", "events", ["user_id", "idempotency_key"], unique=True
    )
    with op.batch_alter_table("events") as batch:
        for name, parent, column, parent_column in FOREIGN_KEYS:
            batch.create_foreign_key(name, parent, [column], [parent_column])
