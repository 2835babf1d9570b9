"""A served process puts what it holds at start out of the garbage collector's reach."""

from __future__ import annotations

import gc

from microservice_connector.web.server import settle_garbage_collector


def test_what_is_alive_at_start_is_never_scanned_again() -> None:
    held = [[index] for index in range(1000)]  # cyclic-GC-tracked objects alive at start
    try:
        settle_garbage_collector()
        assert gc.get_freeze_count() >= len(held)
        assert not any(scanned is held for scanned in gc.get_objects())  # no generation has it
    finally:
        gc.unfreeze()  # this test process goes on collecting as before
    assert gc.get_freeze_count() == 0
