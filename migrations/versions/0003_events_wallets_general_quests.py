"""events of any type, wallets of any item, quests of any shape, API keys

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 19:10:00

v1 data carries over: gold and diamond move from users into wallets (with a ledger
entry each), every progress row's curr_streak becomes the progress of its quest's one
period (""), rewards and earned rewards become one-item bundles, and stored sign-ins
become inputs (occurred_at = created_at, zone UTC, value 1).
"""

import warnings

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import models.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
Stamp = models.base.UTCDateTime(timezone=True)
PENDING_INPUTS = sa.text("occurred_at IS NOT NULL AND processed_at IS NULL")
OLD_PENDING = sa.text("type = 'sign_in' AND processed_at IS NULL")


def _sqlite() -> bool:
    return op.get_context().dialect.name == "sqlite"


def _one_item(item: str, qty: str) -> str:
    """SQL for the JSON bundle [{"item": <item>, "qty": <qty>}] built from two columns."""
    if _sqlite():
        return f"json_array(json_object('item', {item}, 'qty', {qty}))"
    return f"jsonb_build_array(jsonb_build_object('item', {item}, 'qty', {qty}))"


def upgrade() -> None:
    _api_keys()
    _wallets()
    _users()
    _rewards()
    _quests()
    _progress()
    _user_rewards()
    _events()


def _api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("key_id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("scopes", Json, nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_by", Id, nullable=True),
        sa.Column("created_at", Stamp, nullable=False),
        sa.Column("revoked_at", Stamp, nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.user_id"], name=op.f("fk_api_keys_created_by_users")
        ),
        sa.PrimaryKeyConstraint("key_id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )


def _wallets() -> None:
    op.create_table(
        "wallets",
        sa.Column("user_id", Id, nullable=False),
        sa.Column("item", sa.String(length=32), nullable=False),
        sa.Column("balance", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("balance >= 0", name=op.f("ck_wallets_balance_non_negative")),
        sa.ForeignKeyConstraint(["user_id"], ["users.user_id"], name=op.f("fk_wallets_user_id_users")),
        sa.PrimaryKeyConstraint("user_id", "item", name=op.f("pk_wallets")),
    )
    op.create_table(
        "wallet_ledger",
        sa.Column("ledger_id", Id, autoincrement=True, nullable=False),
        sa.Column("user_id", Id, nullable=False),
        sa.Column("item", sa.String(length=32), nullable=False),
        sa.Column("qty", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("created_at", Stamp, nullable=False),
        sa.CheckConstraint("qty >= 1", name=op.f("ck_wallet_ledger_qty_positive")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_wallet_ledger_user_id_users")
        ),
        sa.PrimaryKeyConstraint("ledger_id", name=op.f("pk_wallet_ledger")),
        sa.UniqueConstraint("source", "item", name="uq_wallet_ledger_source_item"),
    )
    op.create_index("ix_wallet_ledger_user", "wallet_ledger", ["user_id", "ledger_id"])
    text = "CAST({} AS TEXT)" if _sqlite() else "{}::text"
    for item in ("gold", "diamond"):
        op.execute(
            f"INSERT INTO wallets (user_id, item, balance) "
            f"SELECT user_id, '{item}', {item} FROM users WHERE {item} > 0"
        )
    # The ledger explains every balance: one entry per reward v1 credited (its source key
    # stops that reward from ever being credited again), and one for any remainder.
    op.execute(
        "INSERT INTO wallet_ledger (user_id, item, qty, source, created_at) "
        f"SELECT user_id, reward_item, reward_qty, 'user_reward:' || {text.format('user_reward_id')}, "
        "claimed_at FROM user_rewards WHERE status = 'claimed'"
    )
    for item in ("gold", "diamond"):
        credited = (
            "SELECT COALESCE(SUM(l.qty), 0) FROM wallet_ledger l "
            f"WHERE l.user_id = users.user_id AND l.item = '{item}'"
        )
        op.execute(
            "INSERT INTO wallet_ledger (user_id, item, qty, source, created_at) "
            f"SELECT user_id, '{item}', {item} - ({credited}), "
            f"'v1-balance:' || {text.format('user_id')}, CURRENT_TIMESTAMP "
            f"FROM users WHERE {item} > ({credited})"
        )


def _users() -> None:
    with warnings.catch_warnings():
        # SQLite's rebuild skips the expression index (put back below), and says so.
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based")
        _rebuild_users()
    _ensure_user_name_index()


def _rebuild_users() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("timezone", sa.String(length=64), server_default="UTC", nullable=False)
        )
        batch.drop_constraint(op.f("ck_users_gold_non_negative"), type_="check")
        batch.drop_constraint(op.f("ck_users_diamond_non_negative"), type_="check")
        batch.drop_column("gold")
        batch.drop_column("diamond")


def _ensure_user_name_index() -> None:
    # SQLite's table rebuild cannot carry an index on an expression: put it back.
    if _sqlite():
        op.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS uq_users_user_name_lower ON users (lower(user_name))"
        )


def _rewards() -> None:
    with op.batch_alter_table("rewards") as batch:
        batch.add_column(sa.Column("items", Json, nullable=True))
        batch.drop_constraint(op.f("ck_rewards_reward_item_valid"), type_="check")
        batch.alter_column(
            "reward_item", existing_type=sa.String(length=16), type_=sa.String(length=32)
        )
    op.execute(f"UPDATE rewards SET items = {_one_item('reward_item', 'reward_qty')}")
    with op.batch_alter_table("rewards") as batch:
        batch.alter_column("items", existing_type=Json, nullable=False)


def _quests() -> None:
    with op.batch_alter_table("quests") as batch:
        batch.add_column(sa.Column("trigger", Json, nullable=True))
        batch.add_column(
            sa.Column("measure", sa.String(length=16), server_default="count", nullable=False)
        )
        batch.add_column(
            sa.Column("period", sa.String(length=8), server_default="none", nullable=False)
        )
        batch.add_column(
            sa.Column("reset_at", sa.String(length=5), server_default="00:00", nullable=False)
        )
        batch.add_column(
            sa.Column(
                "week_starts_on", sa.String(length=9), server_default="monday", nullable=False
            )
        )
        batch.add_column(
            sa.Column("timezone", sa.String(length=64), server_default="user", nullable=False)
        )
        batch.add_column(sa.Column("max_per_period", sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("grace_periods", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(sa.Column("requires", Json, nullable=True))
        batch.add_column(sa.Column("starts_at", Stamp, nullable=True))
        batch.add_column(sa.Column("ends_at", Stamp, nullable=True))
        batch.add_column(sa.Column("claim_within_seconds", sa.BigInteger(), nullable=True))
        batch.drop_constraint(op.f("ck_quests_duplication_positive"), type_="check")
        batch.alter_column("duplication", existing_type=sa.Integer(), nullable=True)
    trigger = (
        "json_object('event', 'sign_in')"
        if _sqlite()
        else "jsonb_build_object('event', 'sign_in')"
    )
    op.execute(f"UPDATE quests SET trigger = {trigger}, requires = '[]'")
    with op.batch_alter_table("quests") as batch:
        batch.alter_column("trigger", existing_type=Json, nullable=False)
        batch.alter_column("requires", existing_type=Json, nullable=False)
        batch.create_check_constraint(
            "duplication_positive", "duplication IS NULL OR duplication >= 1"
        )
        batch.create_check_constraint(
            "max_per_period_positive", "max_per_period IS NULL OR max_per_period >= 1"
        )
        batch.create_check_constraint("grace_periods_non_negative", "grace_periods >= 0")
        batch.create_check_constraint(
            "measure_valid", "measure IN ('count', 'sum', 'consecutive')"
        )
        batch.create_check_constraint(
            "period_valid", "period IN ('none', 'day', 'week', 'month')"
        )


def _progress() -> None:
    op.create_table(
        "user_quest_periods",
        sa.Column("user_id", Id, nullable=False),
        sa.Column("quest_id", Id, nullable=False),
        sa.Column("period_key", sa.String(length=16), nullable=False),
        sa.Column("progress", models.base.Amount(), nullable=False),
        sa.Column("completions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", Stamp, nullable=False),
        sa.CheckConstraint(
            "completions >= 0", name=op.f("ck_user_quest_periods_completions_non_negative")
        ),
        sa.CheckConstraint("progress >= 0", name=op.f("ck_user_quest_periods_progress_non_negative")),
        sa.ForeignKeyConstraint(
            ["quest_id"], ["quests.quest_id"], name=op.f("fk_user_quest_periods_quest_id_quests")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.user_id"], name=op.f("fk_user_quest_periods_user_id_users")
        ),
        sa.PrimaryKeyConstraint(
            "user_id", "quest_id", "period_key", name=op.f("pk_user_quest_periods")
        ),
    )
    # Every v1 quest has no period: its progress is the one period "".
    progress = "CAST(curr_streak AS TEXT)" if _sqlite() else "curr_streak"
    op.execute(
        "INSERT INTO user_quest_periods "
        "(user_id, quest_id, period_key, progress, completions, updated_at) "
        f"SELECT user_id, quest_id, '', {progress}, completions, updated_at "
        "FROM user_quest_progress"
    )
    with op.batch_alter_table("user_quest_progress") as batch:
        batch.add_column(sa.Column("streak_periods", Json, nullable=True))
        batch.add_column(
            sa.Column("best_streak", sa.Integer(), server_default="0", nullable=False)
        )
        batch.add_column(
            sa.Column("streak_completions", sa.Integer(), server_default="0", nullable=False)
        )
        batch.drop_constraint(op.f("ck_user_quest_progress_curr_streak_non_negative"), type_="check")
        batch.drop_column("curr_streak")
    op.execute("UPDATE user_quest_progress SET streak_periods = '[]'")
    with op.batch_alter_table("user_quest_progress") as batch:
        batch.alter_column("streak_periods", existing_type=Json, nullable=False)
        batch.create_check_constraint("best_streak_non_negative", "best_streak >= 0")
        batch.create_check_constraint(
            "streak_completions_non_negative", "streak_completions >= 0"
        )


def _user_rewards() -> None:
    with op.batch_alter_table("user_rewards") as batch:
        batch.add_column(sa.Column("items", Json, nullable=True))
        batch.add_column(sa.Column("expires_at", Stamp, nullable=True))
        batch.drop_constraint(op.f("ck_user_rewards_reward_item_valid"), type_="check")
        batch.drop_constraint(op.f("ck_user_rewards_status_valid"), type_="check")
        batch.alter_column(
            "reward_item", existing_type=sa.String(length=16), type_=sa.String(length=32)
        )
    op.execute(f"UPDATE user_rewards SET items = {_one_item('reward_item', 'reward_qty')}")
    with op.batch_alter_table("user_rewards") as batch:
        batch.alter_column("items", existing_type=Json, nullable=False)
        batch.create_check_constraint(
            "status_valid", "status IN ('not_claimed', 'claimed', 'expired')"
        )


def _events() -> None:
    op.drop_index("ix_events_pending_sign_ins", table_name="events", postgresql_where=OLD_PENDING, sqlite_where=OLD_PENDING)
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint(op.f("ck_events_type_valid"), type_="check")
        batch.alter_column("type", existing_type=sa.String(length=32), type_=sa.String(length=64))
        batch.add_column(sa.Column("occurred_at", Stamp, nullable=True))
        batch.add_column(sa.Column("tz", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("value", models.base.Amount(), nullable=True))
        batch.add_column(sa.Column("attrs", Json, nullable=True))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("api_key_id", Id, nullable=True))
        batch.create_foreign_key(
            "fk_events_api_key_id_api_keys", "api_keys", ["api_key_id"], ["key_id"]
        )
    value = "'1'" if _sqlite() else "1"
    op.execute(
        f"UPDATE events SET occurred_at = created_at, tz = 'UTC', value = {value} "
        "WHERE type = 'sign_in'"
    )
    op.create_index(
        "ix_events_pending_inputs",
        "events",
        ["event_id"],
        postgresql_where=PENDING_INPUTS,
        sqlite_where=PENDING_INPUTS,
    )
    op.create_index(
        "uq_events_user_idempotency_key", "events", ["user_id", "idempotency_key"], unique=True
    )


def downgrade() -> None:
    raise NotImplementedError("v2 keeps data v1 cannot hold (wallets of any item); restore a backup")
