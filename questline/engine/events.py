"""The event the evaluator applies: a sign-in or any gameplay event, as the shell stored it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from questline.engine.definitions import AttrValue
from questline.engine.periods import zone

MAX_VALUE = Decimal(10) ** 9


class EvaluationError(ValueError):
    """An event (or a definition) the evaluator cannot apply: the shell dead-letters it."""


@dataclass(frozen=True, kw_only=True)
class EventIn:
    """One stored event of one user. `tz` is the zone stamped on it when it was stored.

    Sign-ins are events of type "sign_in" with value 1, no attrs, occurred_at = created_at.
    Construction checks what the evaluator relies on and raises EvaluationError otherwise.
    """

    event_id: int
    user_id: int
    type: str
    occurred_at: datetime
    tz: str = "UTC"
    value: Decimal = Decimal(1)
    attrs: Mapping[str, AttrValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.occurred_at.utcoffset() is None:
            raise EvaluationError(f"event {self.event_id}: occurred_at has no UTC offset")
        if not isinstance(self.value, Decimal) or not self.value.is_finite():
            raise EvaluationError(f"event {self.event_id}: value must be a finite Decimal")
        if not Decimal(0) <= self.value <= MAX_VALUE:
            raise EvaluationError(f"event {self.event_id}: value {self.value} is not in 0..10^9")
        try:
            zone(self.tz)
        except KeyError:
            raise EvaluationError(
                f"event {self.event_id}: time zone {self.tz!r} is not an IANA time zone"
            ) from None


def sign_in(event_id: int, user_id: int, created_at: datetime, tz: str = "UTC") -> EventIn:
    """A sign-in as an event: type "sign_in", value 1, no attrs, occurred when stored."""
    return EventIn(event_id=event_id, user_id=user_id, type="sign_in", occurred_at=created_at,
                   tz=tz)
