"""What billing did with events it did not apply (duplicate, deferred, rejected): in memory,
bounded, since the process started. Applied events are recorded durably in `handled_events`."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime

DEFAULT_CAPACITY = 10_000


@dataclass(slots=True)
class Handling:
    """One event's non-applied outcomes: how many of each, the latest, and when."""

    cart_id: str
    version: int
    last_outcome: str
    last_at: datetime
    counts: dict[str, int] = field(default_factory=dict)
    last_error: str | None = None


class HandlingLog:
    """The last `capacity` events billing saw but did not apply; the oldest is forgotten
    first, so memory stays bounded however long billing runs. Thread-safe."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, Handling] = OrderedDict()
        self._lock = threading.Lock()

    def record(
        self, event_id: str, cart_id: str, version: int, outcome: str, error: str | None = None
    ) -> None:
        """Note that `event_id` was `outcome` (duplicate, deferred, rejected) just now."""
        now = datetime.now(UTC)
        with self._lock:
            entry = self._entries.pop(event_id, None)
            if entry is None:
                entry = Handling(cart_id, version, outcome, now)
            entry.last_outcome, entry.last_at = outcome, now
            entry.counts[outcome] = entry.counts.get(outcome, 0) + 1
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
            return Handling(
                entry.cart_id,
                entry.version,
                entry.last_outcome,
                entry.last_at,
                dict(entry.counts),
                entry.last_error,
            )
