"""Snapshots in the `snapshots` table of DESIGN §3.2, next to the events they summarise."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, delete, func, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore import sqlite_statements as sqlite_sql
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.event_rows import as_utc, sqlite_time
from microservice_connector.eventstore.schema import events, snapshots
from microservice_connector.eventstore.snapshot import Snapshot

_LOAD = select(snapshots).where(snapshots.c.aggregate_id == bindparam("aggregate_id"))
# The same for SQLite's own driver: a load is one row, so SQLAlchemy's per-call cost dominates.
_SQLITE_LOAD = (
    "SELECT aggregate_id, aggregate_type, version, state, schema_version, taken_at"
    " FROM snapshots WHERE aggregate_id = ?"
)


_COLUMNS = ("aggregate_id", "aggregate_type", "version", "state", "schema_version", "taken_at")
_INSERT = postgresql.insert(snapshots)
# Insert a snapshot, or replace an earlier one or one in another shape; on SQLite its own
# driver runs the same statement (`sqlite_statements.UPSERT_SNAPSHOT`).
_UPSERT_POSTGRES = _INSERT.on_conflict_do_update(
    index_elements=[snapshots.c.aggregate_id],
    set_={name: _INSERT.excluded[name] for name in _COLUMNS if name != "aggregate_id"},
    where=(snapshots.c.version < _INSERT.excluded.version)
    | (snapshots.c.schema_version != _INSERT.excluded.schema_version),
)
# For this transaction only: snapshots are worth no wait for the disk.
_NOT_WAITING_FOR_THE_DISK = text("SET LOCAL synchronous_commit TO OFF")


class SqlSnapshotStore:
    """One row per aggregate, upserted; a save never replaces a later snapshot of the same
    shape, so concurrent writers cannot move it backwards. Raises `DatabaseUnavailable`."""

    def __init__(self, writer: Engine, reader: Engine) -> None:
        self._writer = writer
        self._reader = reader
        self._sqlite = writer.dialect.name == "sqlite"

    def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        """The aggregate's stored snapshot, or None."""
        try:
            if self._sqlite:
                row = self._load_sqlite(aggregate_id)
            else:
                with self._reader.connect() as connection:
                    row = connection.execute(_LOAD, {"aggregate_id": aggregate_id}).first()
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._reader, exc)) from exc
        if row is None:
            return None
        taken_at = row[5]
        if isinstance(taken_at, str):  # SQLite: SQLAlchemy's naive UTC text
            taken_at = datetime.fromisoformat(taken_at)
        return Snapshot(
            aggregate_id=row[0],
            aggregate_type=row[1],
            version=row[2],
            state=bytes(row[3]),
            schema_version=row[4],
            taken_at=taken_at.replace(tzinfo=UTC) if taken_at.tzinfo is None else taken_at,
        )

    def _load_sqlite(self, aggregate_id: str) -> tuple[Any, ...] | None:
        connection = self._reader.raw_connection()
        try:
            row: tuple[Any, ...] | None = (
                connection.cursor().execute(_SQLITE_LOAD, (aggregate_id,)).fetchone()
            )
        finally:
            connection.close()
        return row

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Insert, or replace an earlier snapshot or one in another shape."""
        self._save([snapshot], synced=True)

    def save_snapshots(self, taken: Sequence[Snapshot]) -> None:
        """Save each of `taken` as `save_snapshot` does, in one transaction whose commit does
        not wait for the disk: a power cut may lose them (snapshots only save time), never
        the events they follow, which an earlier commit made durable."""
        if taken:
            self._save(taken, synced=False)

    def _save(self, taken: Sequence[Snapshot], *, synced: bool) -> None:
        if not self._sqlite:
            self._write(lambda connection: _upsert_postgres(connection, taken, synced))
            return
        rows = [
            (
                s.aggregate_id,
                s.aggregate_type,
                s.version,
                s.state,
                s.schema_version,
                sqlite_time(as_utc(s.taken_at)),
            )
            for s in taken
        ]
        try:
            with sqlite_sql.driver_transaction(self._writer, synced=synced) as connection:
                sqlite_sql.cursor(connection).executemany(sqlite_sql.UPSERT_SNAPSHOT, rows)
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._writer, exc)) from exc

    def delete_snapshots(self) -> int:
        """Delete every snapshot; how many there were."""
        deleted: int = self._write(lambda c: c.execute(delete(snapshots)).rowcount)
        return deleted

    def aggregates(self, aggregate_type: str) -> list[tuple[str, int]]:
        """Every aggregate of `aggregate_type` that has events, with its current version."""
        query = (
            select(events.c.aggregate_id, func.max(events.c.version))
            .where(events.c.aggregate_type == aggregate_type)
            .group_by(events.c.aggregate_id)
            .order_by(events.c.aggregate_id)
        )
        try:
            with self._reader.connect() as connection:
                return [
                    (aggregate_id, version) for aggregate_id, version in connection.execute(query)
                ]
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._reader, exc)) from exc

    def _write(self, work: Any) -> Any:
        try:
            with self._writer.begin() as connection:
                return work(connection)
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._writer, exc)) from exc


def _upsert_postgres(connection: Connection, taken: Sequence[Snapshot], synced: bool) -> None:
    if not synced:
        connection.execute(_NOT_WAITING_FOR_THE_DISK)
    rows = [{name: getattr(snapshot, name) for name in _COLUMNS} for snapshot in taken]
    connection.execute(_UPSERT_POSTGRES, rows)
