"""What billing did with each event it saw lately (applied, duplicate, deferred, rejected) and
when: in memory, bounded, since the process started. Whether an event is applied is also
known durably from its bill: the version gate applies a cart's versions in order, so version
V is applied once the bill's `last_version` reaches V (see `handling_api`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

DEFAULT_CAPACITY = 20_000
Seen = tuple[str, str, int, str]  # event id, cart id, version, outcome
# Where billing got an event it applied: the broker (the fast path), or the cart store itself,
# filling a gap before an early event (`repair`) or following the global feed (`catch-up`).
Source = Literal["broker", "repair", "catch-up"]


@dataclass(slots=True)
class Handling:
    """One event's outcomes: how many of each, the latest, when it was applied."""

    cart_id: str
    version: int
    last_outcome: str
    last_at: datetime
    applied_at: datetime | None = None
    applied_via: Source | None = None
    counts: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None


class HandlingLog:
    """The last `capacity` events billing handled; the oldest is forgotten first, so memory
    stays bounded (a few MB) however long billing runs. Thread-safe; one lock per batch."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, Handling] = OrderedDict()
        self._lock = threading.Lock()

    def record(
        self,
        event_id: str,
        cart_id: str,
        version: int,
        outcome: str,
        error: str | None = None,
        *,
        via: Source = "broker",
    ) -> None:
        """Note that `event_id` (got `via`) was `outcome` just now, with the `error` if any."""
        self.record_batch([(event_id, cart_id, version, outcome)], error, via=via)

    def record_batch(
        self, seen: Iterable[Seen], error: str | None = None, *, via: Source = "broker"
    ) -> None:
        """Note the outcome of each event of a batch (all got `via`), at the same moment."""
        now = datetime.now(UTC)
        with self._lock:
            for event_id, cart_id, version, outcome in seen:
                entry = self._entries.pop(event_id, None)
                if entry is None:
                    entry = Handling(cart_id, version, outcome, now)
                entry.last_outcome, entry.last_at = outcome, now
                entry.counts[outcome] = entry.counts.get(outcome, 0) + 1
                if outcome == "applied":
                    entry.applied_at, entry.applied_via = now, via
                if error is not None:
                    entry.last_error = error
                self._entries[event_id] = entry
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)

    def get(self, event_id: str) -> Handling | None:
        """A copy of what is known of `event_id`, or None."""
        with self._lock:
            entry = self._entries.get(event_id)
            if entry is None:
                return None
            return replace(entry, counts=dict(entry.counts))
