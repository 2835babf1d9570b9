"""What a consumer may commit on one partition: the offset below which everything is acked."""

from __future__ import annotations


class PartitionOffsets:
    """Tracks the deliveries of one partition. `commit_point()` is the lowest offset still
    awaiting its ack, or one past the highest delivered when none is: committing it never
    skips a message that was not acked, whatever order the acks come in."""

    def __init__(self, start: int) -> None:
        self._next = start  # one past the highest offset delivered so far
        self._outstanding: set[int] = set()
        self.committed: int | None = None  # what the broker last accepted from us

    @property
    def next_offset(self) -> int:
        """One past the highest offset delivered so far."""
        return self._next

    def delivered(self, offset: int) -> None:
        """`offset` was handed out and awaits its ack."""
        self._outstanding.add(offset)
        self._next = max(self._next, offset + 1)

    def acked(self, offset: int) -> None:
        """`offset` is done with."""
        self._outstanding.discard(offset)

    def commit_point(self) -> int:
        """The offset to commit: the next one a successor must read."""
        return min(self._outstanding, default=self._next)

    def to_commit(self) -> int | None:
        """`commit_point()` if it moved past what was last committed, else None."""
        point = self.commit_point()
        return point if self.committed is None or point > self.committed else None
