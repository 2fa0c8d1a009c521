"""Queries on quests and rewards."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from models import Quest, Reward, UserQuestProgress
from models.catalog import CatalogState


def list_quests(session: Session, *, active_only: bool = True) -> Sequence[Quest]:
    stmt = select(Quest).order_by(Quest.quest_id)
    if active_only:
        stmt = stmt.where(Quest.active.is_(True))
    return session.scalars(stmt).all()


def get_quest(session: Session, quest_id: int, *, for_update: bool = False) -> Quest | None:
    stmt = select(Quest).where(Quest.quest_id == quest_id)
    if for_update:
        stmt = stmt.with_for_update(of=Quest)
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
