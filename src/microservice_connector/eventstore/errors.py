"""Errors the event store raises."""

from __future__ import annotations


class ConcurrencyError(Exception):
    """An append stated a stale expected version; nothing of it was written."""

    def __init__(self, aggregate_id: str, expected: int, actual: int | None) -> None:
        self.aggregate_id = aggregate_id
        self.expected = expected
        self.actual = actual
        found = "unknown" if actual is None else str(actual)
        super().__init__(
            f"aggregate {aggregate_id!r}: expected version {expected}, store has {found}"
        )


class DatabaseUnavailable(Exception):
    """The database cannot be reached or opened; the message says which and why."""


class WriterStopped(DatabaseUnavailable):
    """The event store's writer thread stopped; no append is taken until the service restarts."""
