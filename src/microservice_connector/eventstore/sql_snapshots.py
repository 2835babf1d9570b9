"""Snapshots in the `snapshots` table of DESIGN §3.2, next to the events they summarise."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, bindparam, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.schema import events, snapshots
from microservice_connector.eventstore.snapshot import Snapshot

_LOAD = select(snapshots).where(snapshots.c.aggregate_id == bindparam("aggregate_id"))
# The same for SQLite's own driver: a load is one row, so SQLAlchemy's per-call cost dominates.
_SQLITE_LOAD = (
    "SELECT aggregate_id, aggregate_type, version, state, schema_version, taken_at"
    " FROM snapshots WHERE aggregate_id = ?"
)


class SqlSnapshotStore:
    """One row per aggregate, upserted; a save never replaces a later snapshot of the same
    shape, so concurrent writers cannot move it backwards. Raises `DatabaseUnavailable`."""

    def __init__(self, writer: Engine, reader: Engine) -> None:
        self._writer = writer
        self._reader = reader
        self._sqlite = writer.dialect.name == "sqlite"
        dialect = sqlite if self._sqlite else postgresql
        self._insert = dialect.insert

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
        values: dict[str, Any] = {
            "aggregate_id": snapshot.aggregate_id,
            "aggregate_type": snapshot.aggregate_type,
            "version": snapshot.version,
            "state": snapshot.state,
            "schema_version": snapshot.schema_version,
            "taken_at": snapshot.taken_at,
        }
        statement = self._insert(snapshots).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=[snapshots.c.aggregate_id],
            set_={k: statement.excluded[k] for k in values if k != "aggregate_id"},
            where=(snapshots.c.version < statement.excluded.version)
            | (snapshots.c.schema_version != statement.excluded.schema_version),
        )
        self._write(lambda connection: connection.execute(statement))

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
