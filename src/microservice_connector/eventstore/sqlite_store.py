"""The SQLite event store: one writer connection (`BEGIN IMMEDIATE`), readers beside it in WAL
mode, and the hot statements through SQLite's own driver."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine

from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore import sqlite_statements as sqlite_sql
from microservice_connector.eventstore.event_rows import (
    from_row,
    sqlite_event_row,
    sqlite_outbox_row,
    sqlite_time,
)
from microservice_connector.eventstore.port import AppendRequest, AppendResult
from microservice_connector.eventstore.sql import SqlEventStore, found_versions
from microservice_connector.eventstore.sqlite_keys import SqliteKeyStatements
from microservice_connector.eventstore.sqlite_outbox import SqliteOutbox


class SqliteEventStore(SqlEventStore):
    """`SqlEventStore` on a SQLite file: appends take the file's one write lock in turn, so
    positions are handed out and become visible in order."""

    _key_statements = SqliteKeyStatements()

    def _open_engines(
        self, url: str, sqlite_synchronous: engines.SqliteSynchronous
    ) -> tuple[Engine, Engine]:
        writer = engines.make_engine(url, writer=True, sqlite_synchronous=sqlite_synchronous)
        return writer, engines.make_engine(url, sqlite_synchronous=sqlite_synchronous)

    def _append_in_own_transaction(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        # Every statement of the fast path goes through the driver, so the transaction does.
        with sqlite_sql.driver_transaction(self._writer) as connection:
            return self._append_together(connection, requests)

    @property
    def outbox(self) -> SqliteOutbox:
        """The outbox rows this store writes, for the relay and for `msc outbox status`."""
        return SqliteOutbox(self._writer, self._reader)

    def _versions(self, connection: Connection, aggregate_ids: set[str]) -> dict[str, int]:
        if not aggregate_ids:
            return {}
        ids = list(aggregate_ids)
        sql = sqlite_sql.VERSIONS.format(rows=",".join(["(?)"] * len(ids)))
        return found_versions(sqlite_sql.cursor(connection).execute(sql, ids).fetchall())

    def _positions(self, connection: Connection, count: int) -> list[int]:
        # The transaction holds the write lock: nobody else takes positions meanwhile.
        if count == 0:
            return []
        last: int = sqlite_sql.cursor(connection).execute(sqlite_sql.LAST_POSITION).fetchone()[0]
        return list(range(last + 1, last + 1 + count))

    def _insert_events(self, connection: Connection, stored: Sequence[RecordedEvent]) -> None:
        rows = [sqlite_event_row(event) for event in stored]
        sqlite_sql.cursor(connection).executemany(sqlite_sql.INSERT_EVENT, rows)

    def _insert_outbox(
        self, connection: Connection, stored: Sequence[RecordedEvent], topic: str
    ) -> None:
        created_at = sqlite_time(datetime.now(UTC))
        rows = [sqlite_outbox_row(event, topic, created_at) for event in stored]
        sqlite_sql.cursor(connection).executemany(sqlite_sql.INSERT_OUTBOX, rows)

    def _load_range(
        self, aggregate_id: str, after_version: int, to_version: int | None
    ) -> list[RecordedEvent]:
        if to_version is None:
            return self._read_raw(sqlite_sql.LOAD, (aggregate_id, after_version))
        return self._read_raw(sqlite_sql.LOAD_TO, (aggregate_id, after_version, to_version))

    def _read_raw(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        """A load on the reader's pooled connection through the sqlite3 driver directly."""
        return [from_row(row) for row in sqlite_sql.read_rows(self._reader, sql, params)]
