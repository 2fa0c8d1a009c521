"""questline.infra.gc_pause: automatic collection is off inside the block and back on
after it (an error included), and a block never turns on what someone else turned off."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from questline.infra.gc_pause import collection_paused


@pytest.fixture(autouse=True)
def _collection_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_collection_is_off_inside_and_on_after() -> None:
    gc.enable()
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collection_comes_back_after_an_error() -> None:
    gc.enable()
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("batch failed")
    assert gc.isenabled()


def test_nested_blocks_leave_it_to_the_outer_one() -> None:
    gc.enable()
    with collection_paused():
        with collection_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_collection_turned_off_elsewhere_stays_off() -> None:
    gc.disable()
    with collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
