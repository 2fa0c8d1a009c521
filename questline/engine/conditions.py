"""Whether an event matches a quest's trigger.

Equality is strict about kinds: a boolean never equals a number (True != 1) and a
string never equals a number ("1" != 1); numbers compare by value (1 == 1.0).
A missing attribute fails every condition on it, `ne` included. `gte`/`lte` hold only
for numbers.
"""

from __future__ import annotations

from collections.abc import Mapping

from questline.engine.definitions import AttrValue, Condition, Operator, Trigger


def trigger_matches(trigger: Trigger, event_type: str, attrs: Mapping[str, AttrValue]) -> bool:
    """True when the event has the trigger's type and every `where` condition holds."""
    if event_type != trigger.event:
        return False
    return not trigger.where or all(holds(c, attrs) for c in trigger.where)


def holds(condition: Condition, attrs: Mapping[str, AttrValue]) -> bool:
    """True when the event attribute the condition names satisfies it."""
    if condition.attr not in attrs:
        return False
    value, operand = attrs[condition.attr], condition.operand
    if isinstance(operand, tuple):  # only `in` takes a list of options
        return condition.op is Operator.IN and any(same(value, o) for o in operand)
    if condition.op is Operator.EQ:
        return same(value, operand)
    if condition.op is Operator.NE:
        return not same(value, operand)
    if isinstance(value, bool | str) or isinstance(operand, bool | str):
        return False  # gte and lte compare numbers only
    if condition.op is Operator.GTE:
        return value >= operand
    return condition.op is Operator.LTE and value <= operand


def same(a: AttrValue, b: AttrValue) -> bool:
    """Equality of two attribute values, strict about their kinds (bool, number, string)."""
    return _kind(a) == _kind(b) and a == b


def is_number(value: AttrValue) -> bool:
    """An int or a float, but not a bool (which Python counts as an int)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _kind(value: AttrValue) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "str"
    return "number"
