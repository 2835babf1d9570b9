"""What a broker holds of a topic right now, so a relay can tell whether it lost messages
it acknowledged: the port, and the shape of its answer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Holding:
    """One log of a topic (a JetStream stream, a Kafka partition): the sequences it may hold
    (`first` to `limit`, as `PublishResult.sequence` numbers them), the highest it holds now
    (`last`; `first - 1` when empty), and when the log was created, where the broker says."""

    first: int
    limit: int
    last: int
    created: datetime | None = None

    def holds(self, sequence: int) -> bool:
        """Whether `sequence` belongs to this log."""
        return self.first <= sequence <= self.limit


class BrokerHoldings(Protocol):
    """Reads what the broker holds of a topic; makes the topic's log exist first (a broker
    that came back empty must take publishes again)."""

    async def holdings(self, topic: str) -> list[Holding]:
        """One `Holding` per log of `topic`; raises `ConnectionError` while unreachable."""
        ...
