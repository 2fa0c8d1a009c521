"""Automatic garbage collection held off while a drain batch runs.

A batch of 200 gameplay inputs allocates a few hundred thousand short-lived containers
(engine states and effects, history rows, statement fields). Almost all of them are
freed by reference counting, yet their allocations alone trip CPython's collector about
25 times per batch, and every few batches a full collection walks every object the
process holds (SQLAlchemy's, Celery's, the catalog's: over 100,000). In the gameplay
drain that was a quarter of the worker's CPU (docs/performance.md). Paused for the
batch, the collector runs once after it, over what the batch left alive.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collection_paused() -> Iterator[None]:
    """Hold automatic collection off inside the block (nothing is missed: the objects
    stay counted, and the first allocation after the block collects as usual).

    Process-wide, so nested or concurrent blocks leave it to the outermost one that found
    it on; at worst a block runs with collection on, as without this."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
