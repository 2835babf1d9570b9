"""The event store's port: what every store (memory, SQLite, PostgreSQL) guarantees."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from microservice_connector.events.envelope import NewEvent, RecordedEvent
from microservice_connector.eventstore.errors import ConcurrencyError
from microservice_connector.eventstore.idempotency import IdempotencyKey, IdempotencyKeyUsed


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """Append `events` to `aggregate_id`, whose current version must be `expected_version`."""

    aggregate_id: str
    aggregate_type: str
    expected_version: int
    events: Sequence[NewEvent]
    # Recorded with the events; a key recorded before makes the append `IdempotencyKeyUsed`.
    idempotency: IdempotencyKey | None = None


AppendResult = list[RecordedEvent] | ConcurrencyError | IdempotencyKeyUsed


def events_or_raise(result: AppendResult) -> list[RecordedEvent]:
    """The events one append wrote; its `ConcurrencyError` or `IdempotencyKeyUsed` raised."""
    if not isinstance(result, list):
        raise result
    return result


class EventStore(Protocol):
    """A thread-safe store of events with optimistic concurrency per aggregate."""

    def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Write all events (and their outbox rows) atomically, or raise `ConcurrencyError`
        (or `IdempotencyKeyUsed`: the request's key was recorded before)."""
        ...

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Apply many appends in one commit; each succeeds or fails on its own version check."""
        ...

    def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events with `after_version < version <= to_version`, oldest first."""
        ...

    def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Up to `limit` events of any aggregate with position > `after_position`, in order."""
        ...

    def ping(self) -> None:
        """Return if the store is reachable; raise `DatabaseUnavailable` otherwise."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...
