"""ban version

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 22:15:00

One row holding the ban version, which every ban bumps in its own transaction: each
API process keeps the banned user ids in memory and reloads them when the version
moves (questline.users.bans). Bans are final, so the set only grows; a partial index
keeps reading it cheap however many users there are.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ban_state",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_ban_state_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ban_state")),
    )
    op.execute(sa.text("INSERT INTO ban_state (id, version) VALUES (1, 1)"))
    op.create_index(
        "ix_users_banned",
        "users",
        ["user_id"],
        postgresql_where=sa.text("status = 'banned'"),
        sqlite_where=sa.text("status = 'banned'"),
    )


def downgrade() -> None:
    op.drop_index("ix_users_banned", table_name="users")
    op.drop_table("ban_state")
