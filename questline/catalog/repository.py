"""Queries on quests and rewards."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import String, func, literal_column, select, update
from sqlalchemy.orm import Session

from models import Quest, Reward, UserQuestProgress
from models.catalog import CatalogState


def list_quests(session: Session, *, active_only: bool = True) -> Sequence[Quest]:
    stmt = select(Quest).order_by(Quest.quest_id)
    if active_only:
        stmt = stmt.where(Quest.active.is_(True))
    return session.scalars(stmt).all()


def get_quest(session: Session, quest_id: int, *, for_update: bool = False) -> Quest | None:
    """The quest; `for_update` locks it against other catalog writes.

    The lock is FOR NO KEY UPDATE, not FOR UPDATE: a worker inserting progress, rewards
    or history of this quest takes a key-share lock on it (the foreign key check) after
    the catalog version, which this write is about to bump and so waits for; a full
    FOR UPDATE would make the two wait for each other (a deadlock).
    """
    stmt = select(Quest).where(Quest.quest_id == quest_id)
    if for_update:
        stmt = stmt.with_for_update(of=Quest, key_share=True)
    return session.scalars(stmt).one_or_none()


def get_quest_by_name(session: Session, name: str) -> Quest | None:
    return session.scalars(select(Quest).where(Quest.name == name)).one_or_none()


def max_completions(session: Session, quest_id: int) -> int:
    value = session.scalar(
        select(func.max(UserQuestProgress.completions)).where(
            UserQuestProgress.quest_id == quest_id
        )
    )
    return int(value or 0)


def list_rewards(session: Session) -> Sequence[Reward]:
    return session.scalars(select(Reward).order_by(Reward.reward_id)).all()


def get_reward(session: Session, reward_id: int) -> Reward | None:
    return session.get(Reward, reward_id)


def catalog_version(session: Session) -> int:
    """The current catalog version (see bump_version)."""
    return int(session.scalar(select(CatalogState.version).where(CatalogState.id == 1)) or 0)


def lock_catalog_version(session: Session) -> tuple[int, str]:
    """The current catalog version, share-locked until the transaction ends (PostgreSQL),
    with the row version that wrote it.

    A catalog write, which bumps the version, waits for this transaction, and this
    transaction waits for a write in progress, so a grant and a catalog write never
    interleave. The row version (PostgreSQL's xmin; "" on SQLite) tells apart two states
    with the same number when a transaction bumped it and rolled back.
    """
    if session.get_bind().dialect.name != "postgresql":
        return catalog_version(session), ""
    row = session.execute(
        select(CatalogState.version, literal_column("xmin").cast(String))
        .where(CatalogState.id == 1)
        .with_for_update(read=True)
    ).one()
    return int(row[0]), str(row[1])


def bump_version(session: Session) -> int:
    """Count one catalog write, in its transaction; the new version.

    Every write of quests or rewards calls this, so a reader that sees version N
    sees every write up to N. The row stays locked until the write commits, so
    catalog writes commit their versions in order; take it after the catalog rows.
    """
    return int(
        session.execute(
            update(CatalogState)
            .where(CatalogState.id == 1)
            .values(version=CatalogState.version + 1)
            .returning(CatalogState.version)
        ).scalar_one()
    )
