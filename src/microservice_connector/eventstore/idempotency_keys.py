"""The `idempotency_keys` table: each key recorded in the transaction of the events its
command appended, so a key is recorded exactly when its command is. What the dialects share
is here; each dialect's reads and inserts (`KeyStatements`) are in `sqlite_keys` and
`postgres_keys`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Column, Connection, DateTime, Engine, Index, Integer, String, Table, delete
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.idempotency import IdempotencyKeyUsed, RecordedKey
from microservice_connector.eventstore.port import AppendRequest
from microservice_connector.eventstore.schema import metadata

MAX_KEY_LENGTH = 255  # what the HTTP API accepts, so every accepted key fits

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("key", String(MAX_KEY_LENGTH), primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("aggregate_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Index("idx_idempotency_keys_expires_at", "expires_at"),
)


class KeyStatements(Protocol):
    """One dialect's reads and inserts of `idempotency_keys` rows, in the caller's
    transaction; the store of that dialect chooses them once."""

    def select(self, connection: Connection, keys: Sequence[str]) -> dict[str, RecordedKey]:
        """The records of those of `keys` that are stored, expired or not, by key."""
        ...

    def insert(
        self, connection: Connection, records: Sequence[RecordedKey], created_at: datetime
    ) -> None:
        """Insert one row per record, expiring its lifetime (`expires_at - created_at`) after
        the row is written (or after `created_at`, where the transaction holds the database's
        write lock since before then); a key already stored raises `IntegrityError`."""
        ...

    def delete_expired(self, connection: Connection, keys: Sequence[str], now: datetime) -> None:
        """Delete the records of those of `keys` that expired by `now`."""
        ...


class KeyLedger:
    """The keys of one append transaction: which requests were applied before (one query
    for all of them), and the keys to record with the events of those applied now."""

    def __init__(
        self,
        connection: Connection,
        requests: Sequence[AppendRequest],
        statements: KeyStatements,
    ) -> None:
        self._connection = connection
        self._statements = statements
        self._now = datetime.now(UTC)
        keys = [r.idempotency.key for r in requests if r.idempotency is not None]
        self._found = statements.select(connection, keys) if keys else {}
        self._expired = {key for key, found in self._found.items() if found.expires_at <= self._now}
        self._accepted: list[RecordedKey] = []

    def used(self, request: AppendRequest) -> IdempotencyKeyUsed | None:
        """The answer for a request whose key is recorded and unexpired; None otherwise."""
        if request.idempotency is None:
            return None
        record = self._found.get(request.idempotency.key)
        if record is None or record.expires_at <= self._now:
            return None
        return IdempotencyKeyUsed(record)

    def accept(self, request: AppendRequest, version: int) -> None:
        """Record the request's key (if any) as applied, leaving `version`."""
        if request.idempotency is None:
            return
        key = request.idempotency
        record = RecordedKey(
            key.key, key.fingerprint, request.aggregate_id, version, self._now + key.ttl
        )
        self._accepted.append(record)
        self._found[key.key] = record  # a repeat later in the same batch is a repeat too

    def write(self) -> None:
        """Insert the accepted keys, replacing expired records of the same keys; a key a
        concurrent transaction recorded first raises `IntegrityError`, as a version race does."""
        if not self._accepted:
            return
        if replaced := [record.key for record in self._accepted if record.key in self._expired]:
            self._statements.delete_expired(self._connection, replaced, self._now)
        self._statements.insert(self._connection, self._accepted, self._now)


class SqlIdempotencyKeys:
    """Reads and purges the keys of one database; appends record them (`KeyLedger`)."""

    def __init__(self, writer: Engine, reader: Engine, statements: KeyStatements) -> None:
        self._writer = writer
        self._reader = reader
        self._statements = statements

    def find(self, key: str) -> RecordedKey | None:
        """The record of `key` if it is there and unexpired."""
        try:
            with self._reader.connect() as connection:
                record = self._statements.select(connection, [key]).get(key)
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._reader, exc)) from exc
        if record is None or record.expires_at <= datetime.now(UTC):
            return None
        return record

    def purge_expired(self) -> int:
        """Delete every expired record; returns how many."""
        try:
            with self._writer.begin() as connection:
                result = connection.execute(
                    delete(idempotency_keys).where(
                        idempotency_keys.c.expires_at <= datetime.now(UTC)
                    )
                )
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._writer, exc)) from exc
        return int(result.rowcount or 0)
