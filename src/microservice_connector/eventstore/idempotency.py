"""Idempotency keys as the event store sees them: a key an append carries, the record of a
key already used, and the answer of an append whose key was used before."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's key for one command, the fingerprint of its request, and how long the key
    is remembered from the commit that applies the command (however long it ran before)."""

    key: str
    fingerprint: str
    ttl: timedelta


@dataclass(frozen=True, slots=True)
class RecordedKey:
    """A key recorded with the events of the command it applied: `version` is the
    aggregate's version right after that command."""

    key: str
    fingerprint: str
    aggregate_id: str
    version: int
    expires_at: datetime


class IdempotencyKeyUsed(Exception):
    """The append's key was recorded before (and has not expired): nothing was written."""

    def __init__(self, record: RecordedKey) -> None:
        super().__init__(f"idempotency key {record.key!r} was used already")
        self.record = record
