"""`KeyStatements` for SQLite, on its own driver as the event rows are: SQLAlchemy's per-row
work cost more than the statements themselves (keys in a 64-command batch: +60% time)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from microservice_connector.eventstore import sqlite_statements as sqlite_sql
from microservice_connector.eventstore.event_rows import as_utc, sqlite_time
from microservice_connector.eventstore.idempotency import RecordedKey

_SELECT = (
    "SELECT key, fingerprint, aggregate_id, version, expires_at FROM idempotency_keys "
    "WHERE key IN ({marks})"
)
_DELETE_EXPIRED = "DELETE FROM idempotency_keys WHERE key IN ({marks}) AND expires_at <= ?"
_INSERT = (
    "INSERT INTO idempotency_keys (key, fingerprint, aggregate_id, version, created_at, "
    "expires_at) VALUES (?, ?, ?, ?, ?, ?)"
)


class SqliteKeyStatements:
    """Keys read and written as SQLAlchemy reads and writes them in SQLite: times as naive
    UTC text, so either path reads what the other wrote."""

    def select(self, connection: Connection, keys: Sequence[str]) -> dict[str, RecordedKey]:
        """The records of those of `keys` that are stored, expired or not, by key."""
        sql = _SELECT.format(marks=",".join("?" * len(keys)))
        rows = sqlite_sql.cursor(connection).execute(sql, list(keys)).fetchall()
        return {
            key: RecordedKey(
                key, fingerprint, aggregate_id, version, as_utc(datetime.fromisoformat(expires_at))
            )
            for key, fingerprint, aggregate_id, version, expires_at in rows
        }

    def insert(
        self, connection: Connection, records: Sequence[RecordedKey], created_at: datetime
    ) -> None:
        """Insert one row per record; a key already stored raises `IntegrityError`."""
        created = sqlite_time(created_at)
        rows = [
            (r.key, r.fingerprint, r.aggregate_id, r.version, created, sqlite_time(r.expires_at))
            for r in records
        ]
        sqlite_sql.cursor(connection).executemany(_INSERT, rows)

    def delete_expired(self, connection: Connection, keys: Sequence[str], now: datetime) -> None:
        """Delete the records of those of `keys` that expired by `now`."""
        sql = _DELETE_EXPIRED.format(marks=",".join("?" * len(keys)))
        sqlite_sql.cursor(connection).execute(sql, [*keys, sqlite_time(now)])
