"""An in-memory event store for unit tests: the same contract, no I/O."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

from microservice_connector.events.codec import Codec, JsonCodec
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import ConcurrencyError
from microservice_connector.eventstore.idempotency import IdempotencyKeyUsed, RecordedKey
from microservice_connector.eventstore.port import AppendRequest, AppendResult


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
        result = self.append_batch([request])[0]
        if not isinstance(result, list):
            raise result
        return result

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """Apply each request on its own version check."""
        with self._lock:
            return [self._append_locked(request) for request in requests]

    def _append_locked(self, request: AppendRequest) -> AppendResult:
        stream = self._streams.get(request.aggregate_id, [])
        key = request.idempotency
        used = self._keys.get(key.key) if key is not None else None
        if used is not None and used.expires_at > datetime.now(UTC):
            return IdempotencyKeyUsed(used)
        if len(stream) != request.expected_version:
            return ConcurrencyError(request.aggregate_id, request.expected_version, len(stream))
        recorded: list[RecordedEvent] = []
        for offset, event in enumerate(request.events, start=1):
            event_id = event.event_id or str(uuid.uuid4())
            if event_id in self._event_ids or any(e.event_id == event_id for e in recorded):
                return ConcurrencyError(request.aggregate_id, request.expected_version, len(stream))
            recorded.append(
                RecordedEvent(
                    position=len(self._all) + offset,
                    event_id=event_id,
                    aggregate_id=request.aggregate_id,
                    aggregate_type=request.aggregate_type,
                    version=request.expected_version + offset,
                    event_type=event.event_type,
                    schema_version=event.schema_version,
                    content_type=self._codec.content_type,
                    event_data=self._codec.encode(event.event_type, event.payload),
                    timestamp=event.timestamp.astimezone(UTC),
                    correlation_id=event.correlation_id,
                    causation_id=event.causation_id,
                    traceparent=event.traceparent,
                    tracestate=event.tracestate,
                )
            )
        self._all.extend(recorded)
        self._streams.setdefault(request.aggregate_id, []).extend(recorded)
        self._event_ids.update(e.event_id for e in recorded)
        if key is not None:
            version = request.expected_version + len(recorded)
            self._keys[key.key] = RecordedKey(
                key.key, key.fingerprint, request.aggregate_id, version, key.expires_at
            )
        return recorded

    def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events in the version range, oldest first."""
        with self._lock:
            stream = self._streams.get(aggregate_id, [])
            return list(stream[after_version:to_version])

    def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Events after `after_position`, in position order."""
        with self._lock:
            return list(self._all[after_position : after_position + limit])

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        """Nothing to release."""
