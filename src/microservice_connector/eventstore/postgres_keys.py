"""`KeyStatements` for PostgreSQL, as plain SQL on the psycopg connection under SQLAlchemy's,
so that in a pipelined append (`postgres_statements`) they travel with the batch's other
statements; their errors come out as SQLAlchemy's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection

from microservice_connector.eventstore import postgres_statements as postgres_sql
from microservice_connector.eventstore.event_rows import as_utc
from microservice_connector.eventstore.idempotency import RecordedKey


class PostgresKeyStatements:
    """Keys read and written through psycopg; times as `timestamptz`, read in UTC."""

    def select(self, connection: Connection, keys: Sequence[str]) -> dict[str, RecordedKey]:
        """The records of those of `keys` that are stored, expired or not, by key."""
        with postgres_sql.sqlalchemy_errors():
            cursor = postgres_sql.driver(connection).cursor()
            rows = cursor.execute(postgres_sql.SELECT_KEYS, [list(keys)]).fetchall()
        return {
            key: RecordedKey(key, fingerprint, aggregate_id, version, as_utc(expires_at))
            for key, fingerprint, aggregate_id, version, expires_at in rows
        }

    def insert(
        self, connection: Connection, records: Sequence[RecordedKey], created_at: datetime
    ) -> None:
        """Insert one row per record, each expiring its lifetime (`expires_at - created_at`)
        after the row is written; a key already stored raises `IntegrityError` (at once, or
        in a pipeline when its results are next fetched)."""
        rows = [
            (r.key, r.fingerprint, r.aggregate_id, r.version, created_at, r.expires_at - created_at)
            for r in records
        ]
        with postgres_sql.sqlalchemy_errors():
            postgres_sql.driver(connection).cursor().executemany(postgres_sql.INSERT_KEY, rows)

    def delete_expired(self, connection: Connection, keys: Sequence[str], now: datetime) -> None:
        """Delete the records of those of `keys` that expired by `now`."""
        with postgres_sql.sqlalchemy_errors():
            cursor = postgres_sql.driver(connection).cursor()
            cursor.execute(postgres_sql.DELETE_EXPIRED_KEYS, [list(keys), now])
