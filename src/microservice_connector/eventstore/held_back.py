"""Outbox rows the broker refused for themselves (too large, a header it cannot carry): the
relay publishes the rows after them at once, and tries each refused row again only after a
delay that doubles with the row's attempts (every try counts, an outage's failed ones too),
so a row that can never go out costs the others almost nothing."""

from __future__ import annotations

import time
from collections.abc import Callable

FIRST_RETRY_S = 1.0
LONGEST_RETRY_S = 300.0


class HeldBack:
    """Rows not to publish until their time. Use: after a refusal, `hold(row_id, attempts)`;
    a claim skips `now_held()`, so a held row is neither read nor leased again. A row's retry
    after its wait is a new attempt: an operator who raises the broker's limit gets it out
    without a restart."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._until: dict[int, float] = {}  # row id -> the clock's time it may go again

    def hold(self, row_id: int, attempts: int) -> float:
        """Hold `row_id` back after its `attempts`-th attempt (1 for the first); returns the
        seconds until it may be published again."""
        delay = min(LONGEST_RETRY_S, FIRST_RETRY_S * 2.0 ** min(max(attempts, 1) - 1, 20))
        self._until[row_id] = self._clock() + delay
        return delay

    def now_held(self) -> list[int]:
        """The rows held back now, for a claim to skip; forgets the holds that ran out."""
        now = self._clock()
        self._until = {row_id: until for row_id, until in self._until.items() if until > now}
        return list(self._until)
