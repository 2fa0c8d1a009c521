"""A player's wallet, as the API shows it. Never commits."""

from __future__ import annotations

from sqlalchemy.orm import Session

from questline.wallet import repository


def my_wallet(session: Session, *, user_id: int) -> dict[str, dict[str, int]]:
    """{"balances": {item: balance}}, gold and diamond always present."""
    return {"balances": repository.balances(session, user_id)}
