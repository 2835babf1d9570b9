"""The outbox on SQLite: the relay's two hot statements, its read of the pending rows and its
mark, go through SQLite's own driver; one relay owns a SQLite outbox, so nothing is leased."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore import sqlite_statements as sqlite_sql
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.event_rows import sqlite_time
from microservice_connector.eventstore.outbox import (
    IdRun,
    IdSpan,
    OutboxRow,
    SqlOutbox,
    decode_headers,
    singles_and_ranges,
)


class SqliteOutbox(SqlOutbox):
    """`SqlOutbox` on a SQLite file: the same reads and marks, through the driver."""

    claims_in_microseconds = True  # a read of a few indexed rows of a local file
    leases = False

    def pending(self, limit: int = 500, skip: Sequence[IdSpan] = ()) -> list[OutboxRow]:
        """Up to `limit` unpublished rows, oldest first, but those in the spans `skip`."""
        if skip:
            singles, ranges = singles_and_ranges(skip)
            statement = sqlite_sql.pending_outbox_skipping(bool(singles), len(ranges))
            held = [json.dumps(singles)] if singles else []
            bounds = [bound for span in ranges for bound in span]
            rows = sqlite_sql.read_rows(self._reader, statement, (*held, *bounds, limit))
        else:
            rows = sqlite_sql.read_rows(self._reader, sqlite_sql.PENDING_OUTBOX, (limit,))
        return [
            OutboxRow(
                id=row_id,
                event_id=event_id,
                topic=topic,
                key=key,
                headers=decode_headers(headers),
                payload=bytes(payload),
                created_at=datetime.fromisoformat(created_at).replace(tzinfo=UTC),
                attempts=attempts,
            )
            for row_id, event_id, topic, key, headers, payload, created_at, attempts in rows
        ]

    def rows_to_publish(
        self, relay_id: str, limit: int, lease_seconds: float, skip: Sequence[IdSpan] = ()
    ) -> list[OutboxRow]:
        """The oldest `limit` pending rows but those in the spans `skip`: the file's one
        relay owns them all, so nothing is leased."""
        return self.pending(limit, skip)

    def release(self, relay_id: str) -> None:
        """Nothing to end: no lease was taken."""

    def _mark_runs(self, runs: list[IdRun], now: datetime) -> None:
        """Mark each run of rows published at `now`, with its broker sequences (or none)."""
        published = sqlite_time(now)
        marks = [(published, run.offset, run.first, run.last) for run in runs]
        try:
            # A mark lost to a power cut only publishes its rows again, which billing
            # ignores; the next append's fsync makes it durable.
            with sqlite_sql.driver_transaction(self._writer, synced=False) as connection:
                sqlite_sql.cursor(connection).executemany(sqlite_sql.MARK_OUTBOX_RUN, marks)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._writer, exc)) from exc
