"""The `idempotency_keys` table: each key recorded in the transaction of the events its
command appended, so a key is recorded exactly when its command is."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    Index,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore import sqlite_statements as sqlite_sql
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.event_rows import sqlite_time
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
# On SQLite's driver directly, as the event rows are: SQLAlchemy's per-row work cost more
# than the statements themselves (keys in a 64-command batch: +60% time, measured).
_SQLITE_SELECT = (
    "SELECT key, fingerprint, aggregate_id, version, expires_at FROM idempotency_keys "
    "WHERE key IN ({marks})"
)
_SQLITE_INSERT = (
    "INSERT INTO idempotency_keys (key, fingerprint, aggregate_id, version, created_at, "
    "expires_at) VALUES (?, ?, ?, ?, ?, ?)"
)
_COLUMNS = (
    idempotency_keys.c.key,
    idempotency_keys.c.fingerprint,
    idempotency_keys.c.aggregate_id,
    idempotency_keys.c.version,
    idempotency_keys.c.expires_at,
)


class KeyLedger:
    """The keys of one append transaction: which requests were applied before (one query
    for all of them), and the keys to record with the events of those applied now."""

    def __init__(self, connection: Connection, requests: Sequence[AppendRequest]) -> None:
        self._connection = connection
        self._now = datetime.now(UTC)
        keys = [r.idempotency.key for r in requests if r.idempotency is not None]
        self._found = _select(connection, keys) if keys else {}
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
            key.key, key.fingerprint, request.aggregate_id, version, key.expires_at
        )
        self._accepted.append(record)
        self._found[key.key] = record  # a repeat later in the same batch is a repeat too

    def write(self) -> None:
        """Insert the accepted keys, replacing expired records of the same keys; a key a
        concurrent transaction recorded first raises `IntegrityError`, as a version race does."""
        if not self._accepted:
            return
        if replaced := [record.key for record in self._accepted if record.key in self._expired]:
            self._connection.execute(
                delete(idempotency_keys).where(
                    idempotency_keys.c.key.in_(replaced),
                    idempotency_keys.c.expires_at <= self._now,
                )
            )
        if self._connection.dialect.name == "sqlite":
            created_at = sqlite_time(self._now)
            sqlite_sql.cursor(self._connection).executemany(
                _SQLITE_INSERT,
                [
                    (
                        r.key,
                        r.fingerprint,
                        r.aggregate_id,
                        r.version,
                        created_at,
                        sqlite_time(r.expires_at),
                    )
                    for r in self._accepted
                ],
            )
            return
        self._connection.execute(
            insert(idempotency_keys),
            [
                {
                    "key": record.key,
                    "fingerprint": record.fingerprint,
                    "aggregate_id": record.aggregate_id,
                    "version": record.version,
                    "created_at": self._now,
                    "expires_at": record.expires_at,
                }
                for record in self._accepted
            ],
        )


class SqlIdempotencyKeys:
    """Reads and purges the keys of one database; appends record them (`KeyLedger`)."""

    def __init__(self, writer: Engine, reader: Engine) -> None:
        self._writer = writer
        self._reader = reader

    def find(self, key: str) -> RecordedKey | None:
        """The record of `key` if it is there and unexpired."""
        try:
            with self._reader.connect() as connection:
                record = _select(connection, [key]).get(key)
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


def _select(connection: Connection, keys: Sequence[str]) -> dict[str, RecordedKey]:
    rows: Any
    if connection.dialect.name == "sqlite":
        sql = _SQLITE_SELECT.format(marks=",".join("?" * len(keys)))
        rows = sqlite_sql.cursor(connection).execute(sql, list(keys)).fetchall()
    else:
        rows = connection.execute(select(*_COLUMNS).where(idempotency_keys.c.key.in_(keys)))
    return {
        key: RecordedKey(key, fingerprint, aggregate_id, version, _utc(expires_at))
        for key, fingerprint, aggregate_id, version, expires_at in rows
    }


def _utc(moment: datetime | str) -> datetime:
    """SQLite hands back the naive UTC time SQLAlchemy stored, as text from its driver."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
