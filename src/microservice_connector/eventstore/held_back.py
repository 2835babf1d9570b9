"""Outbox rows the broker refused for themselves (too large to take): the relay publishes the
rows after them at once, and tries each refused row again only after a delay that doubles
with its failed attempts, so a row that can never go out costs the others nothing."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

FIRST_RETRY_S = 1.0
LONGEST_RETRY_S = 300.0


class HeldBack:
    """Rows not to publish until their time. Use: after a refusal, `hold(row_id, attempts)`;
    of the rows a claim read, publish only `ready(ids)`. A row's retry after its wait is a
    new attempt: an operator who raises the broker's limit gets it out without a restart."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[int, float] = {}  # row id -> the clock's time it may go again

    def __len__(self) -> int:
        """How many rows wait: a claim reads that many more to find the rows after them."""
        return len(self._until)

    def hold(self, row_id: int, attempts: int) -> float:
        """Hold `row_id` back after its `attempts`-th failed attempt (1 for the first);
        returns the seconds until it may be published again."""
        delay = min(LONGEST_RETRY_S, FIRST_RETRY_S * 2.0 ** min(max(attempts, 1) - 1, 20))
        self._until[row_id] = self._clock() + delay
        return delay

    def ready(self, row_ids: Iterable[int]) -> list[int]:
        """Those of `row_ids` not held back now; forgets the holds that have run out."""
        now = self._clock()
        self._until = {row_id: until for row_id, until in self._until.items() if until > now}
        return [row_id for row_id in row_ids if row_id not in self._until]
