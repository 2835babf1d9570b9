"""An in-memory event store for unit tests: the same contract, no I/O."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime

from microservice_connector.events.codec import Codec, JsonCodec
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import ConcurrencyError
from microservice_connector.eventstore.event_rows import recorded
from microservice_connector.eventstore.idempotency import IdempotencyKeyUsed, RecordedKey
from microservice_connector.eventstore.port import AppendRequest, AppendResult, events_or_raise


class InMemoryEventStore:
    """Keeps events in lists behind a lock; guarantees match `EventStore`, durability does not."""

    def __init__(self, *, codec: Codec | None = None) -> None:
        self._codec = codec or JsonCodec()
        self._lock = threading.Lock()
        self._all: list[RecordedEvent] = []
        self._streams: dict[str, list[RecordedEvent]] = {}
        self._event_ids: set[str] = set()
        self._keys: dict[str, RecordedKey] = {}

    def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Append atomically or raise `ConcurrencyError`."""
        return events_or_raise(self.append_batch([request])[0])

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Apply each request on its own version check; all or nothing when one raises (an
        event that does not encode), as a SQL transaction would."""
        with self._lock:
            first_new, keys_before = len(self._all), dict(self._keys)
            try:
                return [self._append_locked(request, self._codec) for request in requests]
            except BaseException:
                self._undo(first_new)
                self._keys = keys_before
                raise

    def _undo(self, first_new: int) -> None:
        """Forget the events from position `first_new + 1` on (each is its stream's newest)."""
        for event in self._all[first_new:]:
            self._streams[event.aggregate_id].pop()
            self._event_ids.discard(event.event_id)
        del self._all[first_new:]

    def _append_locked(self, request: AppendRequest, codec: Codec) -> AppendResult:
        stream = self._streams.get(request.aggregate_id, [])
        key = request.idempotency
        used = self._keys.get(key.key) if key is not None else None
        if used is not None and used.expires_at > datetime.now(UTC):
            return IdempotencyKeyUsed(used)
        if len(stream) != request.expected_version:
            return ConcurrencyError(request.aggregate_id, request.expected_version, len(stream))
        stored: list[RecordedEvent] = []
        for offset, event in enumerate(request.events, start=1):
            position = len(self._all) + offset
            record = recorded(request, event, request.expected_version + offset, position, codec)
            if record.event_id in self._event_ids or any(
                e.event_id == record.event_id for e in stored
            ):
                return ConcurrencyError(request.aggregate_id, request.expected_version, len(stream))
            stored.append(record)
        self._all.extend(stored)
        self._streams.setdefault(request.aggregate_id, []).extend(stored)
        self._event_ids.update(e.event_id for e in stored)
        if key is not None:
            version = request.expected_version + len(stored)
            expires_at = datetime.now(UTC) + key.ttl
            self._keys[key.key] = RecordedKey(
                key.key, key.fingerprint, request.aggregate_id, version, expires_at
            )
        return stored

    def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events in the version range (any integers), oldest first."""
        if to_version is not None and to_version < 1:
            return []
        with self._lock:
            stream = self._streams.get(aggregate_id, [])
            return list(stream[max(after_version, 0) : to_version])

    def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Events after `after_position`, in position order."""
        with self._lock:
            return list(self._all[after_position : after_position + limit])

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""
