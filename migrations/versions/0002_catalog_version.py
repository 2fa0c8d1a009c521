"""catalog version

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00.000000

One row holding the catalog version, which every catalog write bumps in its own
transaction; cached catalog reads are keyed by it.
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('catalog_state',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.CheckConstraint('id = 1', name=op.f('ck_catalog_state_single_row')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_catalog_state'))
    )
    op.execute(sa.text("INSERT INTO catalog_state (id, version) VALUES (1, 1)"))


def downgrade() -> None:
    op.drop_table('catalog_state')
