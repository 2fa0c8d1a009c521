"""initial schema and seed catalog

Revision ID: 0001
Revises: 
Create Date: 2026-11-28 09:04:20.689428

The whole schema, and the seed catalog: reward 1 "Ten Diamonds" and quest 1
"sign-in-three-times" (streak 3, duplication 2, claimed by hand).
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('rewards',
    sa.Column('reward_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('reward_name', sa.String(length=100), nullable=False),
    sa.Column('reward_item', sa.String(length=16), nullable=False),
    sa.Column('reward_qty', sa.Integer(), nullable=False),
    sa.CheckConstraint("reward_item IN ('gold', 'diamond')", name=op.f('ck_rewards_reward_item_valid')),
    sa.CheckConstraint('reward_qty >= 1', name=op.f('ck_rewards_reward_qty_positive')),
    sa.PrimaryKeyConstraint('reward_id', name=op.f('pk_rewards'))
    )
    op.create_table('users',
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_name', sa.String(length=32), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('gold', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('diamond', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='new', nullable=False),
    sa.Column('role', sa.String(length=16), server_default='player', nullable=False),
    sa.Column('created_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("role IN ('player', 'admin')", name=op.f('ck_users_role_valid')),
    sa.CheckConstraint("status IN ('new', 'not_new', 'banned')", name=op.f('ck_users_status_valid')),
    sa.CheckConstraint('diamond >= 0', name=op.f('ck_users_diamond_non_negative')),
    sa.CheckConstraint('gold >= 0', name=op.f('ck_users_gold_non_negative')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_users'))
    )
    op.create_index('uq_users_user_name_lower', 'users', [sa.literal_column('lower(user_name)')], unique=True)
    op.create_table('idempotency_keys',
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=255), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=False),
    sa.Column('response', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', models.base.UTCDateTime(timezone=True), server_default=sa.text('CURRENT_TIMESTAMP'), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_idempotency_keys_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_index(op.f('ix_idempotency_keys_created_at'), 'idempotency_keys', ['created_at'], unique=False)
    op.create_table('quests',
    sa.Column('quest_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('reward_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('auto_claim', sa.Boolean(), nullable=False),
    sa.Column('streak', sa.Integer(), nullable=False),
    sa.Column('duplication', sa.Integer(), nullable=False),
    sa.Column('active', sa.Boolean(), server_default='true', nullable=False),
    sa.Column('created_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('duplication >= 1', name=op.f('ck_quests_duplication_positive')),
    sa.CheckConstraint('streak >= 1', name=op.f('ck_quests_streak_positive')),
    sa.ForeignKeyConstraint(['reward_id'], ['rewards.reward_id'], name=op.f('fk_quests_reward_id_rewards')),
    sa.PrimaryKeyConstraint('quest_id', name=op.f('pk_quests')),
    sa.UniqueConstraint('name', name=op.f('uq_quests_name'))
    )
    op.create_table('refresh_tokens',
    sa.Column('token_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('family_id', sa.String(length=32), nullable=False),
    sa.Column('created_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_refresh_tokens_user_id_users')),
    sa.PrimaryKeyConstraint('token_id', name=op.f('pk_refresh_tokens')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_refresh_tokens_token_hash'))
    )
    op.create_index(op.f('ix_refresh_tokens_family_id'), 'refresh_tokens', ['family_id'], unique=False)
    op.create_index(op.f('ix_refresh_tokens_user_id'), 'refresh_tokens', ['user_id'], unique=False)
    op.create_table('events',
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('quest_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('processed_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('dead_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("type IN ('sign_in', 'quest_progress', 'quest_completed', 'reward_earned', 'reward_claimed')", name=op.f('ck_events_type_valid')),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_events_attempts_non_negative')),
    sa.ForeignKeyConstraint(['quest_id'], ['quests.quest_id'], name=op.f('fk_events_quest_id_quests')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_events_user_id_users')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_events'))
    )
    op.create_index('ix_events_pending_sign_ins', 'events', ['event_id'], unique=False, postgresql_where=sa.text("type = 'sign_in' AND processed_at IS NULL"), sqlite_where=sa.text("type = 'sign_in' AND processed_at IS NULL"))
    op.create_index('ix_events_user_history', 'events', ['user_id', 'event_id'], unique=False)
    op.create_table('user_quest_progress',
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('quest_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('curr_streak', sa.Integer(), server_default='0', nullable=False),
    sa.Column('completions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('updated_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.CheckConstraint('completions >= 0', name=op.f('ck_user_quest_progress_completions_non_negative')),
    sa.CheckConstraint('curr_streak >= 0', name=op.f('ck_user_quest_progress_curr_streak_non_negative')),
    sa.ForeignKeyConstraint(['quest_id'], ['quests.quest_id'], name=op.f('fk_user_quest_progress_quest_id_quests')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_user_quest_progress_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', 'quest_id', name=op.f('pk_user_quest_progress'))
    )
    op.create_table('user_rewards',
    sa.Column('user_reward_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('user_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('quest_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('completion_no', sa.Integer(), nullable=False),
    sa.Column('reward_item', sa.String(length=16), nullable=False),
    sa.Column('reward_qty', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('earned_at', models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('claimed_at', models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("(status = 'claimed') = (claimed_at IS NOT NULL)", name=op.f('ck_user_rewards_claimed_at_matches_status')),
    sa.CheckConstraint("reward_item IN ('gold', 'diamond')", name=op.f('ck_user_rewards_reward_item_valid')),
    sa.CheckConstraint("status IN ('not_claimed', 'claimed')", name=op.f('ck_user_rewards_status_valid')),
    sa.CheckConstraint('completion_no >= 1', name=op.f('ck_user_rewards_completion_no_positive')),
    sa.CheckConstraint('reward_qty >= 1', name=op.f('ck_user_rewards_reward_qty_positive')),
    sa.ForeignKeyConstraint(['quest_id'], ['quests.quest_id'], name=op.f('fk_user_rewards_quest_id_quests')),
    sa.ForeignKeyConstraint(['user_id'], ['users.user_id'], name=op.f('fk_user_rewards_user_id_users')),
    sa.PrimaryKeyConstraint('user_reward_id', name=op.f('pk_user_rewards')),
    sa.UniqueConstraint('user_id', 'quest_id', 'completion_no', name='uq_user_rewards_completion')
    )
    op.create_index('ix_user_rewards_user_earned', 'user_rewards', ['user_id', 'user_reward_id'], unique=False)
    _seed()


def _seed() -> None:
    now = sa.func.now() if op.get_context().dialect.name == "postgresql" else sa.func.datetime("now")
    op.execute(
        sa.text(
            "INSERT INTO rewards (reward_id, reward_name, reward_item, reward_qty) "
            "VALUES (1, 'Ten Diamonds', 'diamond', 10)"
        )
    )
    quests = sa.table(
        "quests",
        sa.column("quest_id"), sa.column("reward_id"), sa.column("name"),
        sa.column("description"), sa.column("auto_claim"), sa.column("streak"),
        sa.column("duplication"), sa.column("active"), sa.column("created_at"),
        sa.column("updated_at"),
    )
    op.execute(
        quests.insert().values(
            quest_id=1,
            reward_id=1,
            name="sign-in-three-times",
            description="Sign in three times to earn ten diamonds; can be earned twice.",
            auto_claim=False,
            streak=3,
            duplication=2,
            active=True,
            created_at=now,
            updated_at=now,
        )
    )
    if op.get_context().dialect.name == "postgresql":
        # Explicit ids above: move the sequences past them.
        op.execute("SELECT setval('rewards_reward_id_seq', 1)")
        op.execute("SELECT setval('quests_quest_id_seq', 1)")


def downgrade() -> None:
    op.drop_index('ix_user_rewards_user_earned', table_name='user_rewards')
    op.drop_table('user_rewards')
    op.drop_table('user_quest_progress')
    op.drop_index('ix_events_user_history', table_name='events')
    op.drop_index('ix_events_pending_sign_ins', table_name='events', postgresql_where=sa.text("type = 'sign_in' AND processed_at IS NULL"), sqlite_where=sa.text("type = 'sign_in' AND processed_at IS NULL"))
    op.drop_table('events')
    op.drop_index(op.f('ix_refresh_tokens_user_id'), table_name='refresh_tokens')
    op.drop_index(op.f('ix_refresh_tokens_family_id'), table_name='refresh_tokens')
    op.drop_table('refresh_tokens')
    op.drop_table('quests')
    op.drop_index(op.f('ix_idempotency_keys_created_at'), table_name='idempotency_keys')
    op.drop_table('idempotency_keys')
    op.drop_index('uq_users_user_name_lower', table_name='users')
    op.drop_table('users')
    op.drop_table('rewards')
