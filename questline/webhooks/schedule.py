"""When the next attempt of a delivery is due: exponential backoff with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable

JITTER = 0.2


def retry_delay(
    failed_attempts: int,
    *,
    base_seconds: float,
    max_seconds: float,
    draw: Callable[[float, float], float] = random.uniform,
) -> float:
    """Seconds to wait before retry n (after n failed attempts): base x 2^(n-1), within
    +-20 % jitter, never above max_seconds."""
    n = max(failed_attempts, 1)
    nominal = base_seconds * 2.0 ** min(n - 1, 60)
    return min(nominal * draw(1 - JITTER, 1 + JITTER), max_seconds)
