"""`KeyStatements` for PostgreSQL, through SQLAlchemy Core."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from microservice_connector.eventstore.event_rows import as_utc
from microservice_connector.eventstore.idempotency import RecordedKey
from microservice_connector.eventstore.idempotency_keys import idempotency_keys

_COLUMNS = (
    idempotency_keys.c.key,
    idempotency_keys.c.fingerprint,
    idempotency_keys.c.aggregate_id,
    idempotency_keys.c.version,
    idempotency_keys.c.expires_at,
)


class PostgresKeyStatements:
    """Keys read and written through SQLAlchemy Core; times as `timestamptz`, read in UTC."""

    def select(self, connection: Connection, keys: Sequence[str]) -> dict[str, RecordedKey]:
        """The records of those of `keys` that are stored, expired or not, by key."""
        rows = connection.execute(select(*_COLUMNS).where(idempotency_keys.c.key.in_(keys)))
        return {
            key: RecordedKey(key, fingerprint, aggregate_id, version, as_utc(expires_at))
            for key, fingerprint, aggregate_id, version, expires_at in rows
        }

    def insert(
        self, connection: Connection, records: Sequence[RecordedKey], created_at: datetime
    ) -> None:
        """Insert one row per record; a key already stored raises `IntegrityError`."""
        connection.execute(
            insert(idempotency_keys),
            [
                {
                    "key": record.key,
                    "fingerprint": record.fingerprint,
                    "aggregate_id": record.aggregate_id,
                    "version": record.version,
                    "created_at": created_at,
                    "expires_at": record.expires_at,
                }
                for record in records
            ],
        )

    def delete_expired(self, connection: Connection, keys: Sequence[str], now: datetime) -> None:
        """Delete the records of those of `keys` that expired by `now`."""
        connection.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.key.in_(keys), idempotency_keys.c.expires_at <= now
            )
        )
