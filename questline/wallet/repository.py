"""Queries on wallets and the ledger.

A credit is written to the ledger first, keyed by (source, item): a source that was
already credited inserts nothing and so adds nothing to the wallet. Wallet rows are
the last rows any transaction locks, in (user_id, item) order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from models import LedgerEntry, WalletBalance
from questline.infra import bulk

# Always shown, so v1 clients find their two fields.
V1_ITEMS = ("gold", "diamond")

_LEDGER = cast(Table, LedgerEntry.__table__)
_WALLETS = cast(Table, WalletBalance.__table__)


@dataclass(frozen=True)
class Credit:
    """`qty` of `item` for `user_id`, paid by `source` (e.g. "user_reward:42")."""

    user_id: int
    item: str
    qty: int
    source: str


def credit(session: Session, credits: Iterable[Credit], *, now: datetime) -> list[Credit]:
    """Apply credits whose (source, item) is new; the ones applied (the rest were paid before)."""
    wanted = sorted(credits, key=lambda c: (c.user_id, c.item, c.source))
    if not wanted:
        return []
    inserted = set(
        bulk.insert_rows(
            session,
            _LEDGER,
            [
                {
                    "user_id": c.user_id,
                    "item": c.item,
                    "qty": c.qty,
                    "source": c.source,
                    "created_at": now,
                }
                for c in wanted
            ],
            conflict=("source", "item"),
            returning=("source", "item"),
        )
    )
    applied = [c for c in wanted if (c.source, c.item) in inserted]
    totals: dict[tuple[int, str], int] = {}
    for c in applied:
        totals[(c.user_id, c.item)] = totals.get((c.user_id, c.item), 0) + c.qty
    if totals:
        # One statement for every wallet row; its VALUES go in (user_id, item) order, the
        # order the rows are locked in.
        bulk.insert_rows(
            session,
            _WALLETS,
            [
                {"user_id": user_id, "item": item, "balance": qty}
                for (user_id, item), qty in sorted(totals.items())
            ],
            conflict=("user_id", "item"),
            set_on_conflict={"balance": "wallets.balance + excluded.balance"},
        )
    return applied


def balances(session: Session, user_id: int) -> dict[str, int]:
    """Every item the user holds, with gold and diamond always present."""
    held = {
        item: int(balance)
        for item, balance in session.execute(
            select(WalletBalance.item, WalletBalance.balance)
            .where(WalletBalance.user_id == user_id)
            .order_by(WalletBalance.item)
        )
    }
    return {**dict.fromkeys(V1_ITEMS, 0), **held}


def balances_of(session: Session, user_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """Balances of several users (for listings), gold and diamond always present."""
    result: dict[int, dict[str, int]] = {u: dict.fromkeys(V1_ITEMS, 0) for u in user_ids}
    if not user_ids:
        return result
    rows = session.execute(
        select(WalletBalance.user_id, WalletBalance.item, WalletBalance.balance).where(
            WalletBalance.user_id.in_(list(user_ids))
        )
    )
    for user_id, item, balance in rows:
        result[user_id][item] = int(balance)
    return result
