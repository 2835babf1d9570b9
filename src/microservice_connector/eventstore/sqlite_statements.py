"""The event store's hot statements as plain SQL for SQLite's own driver (sqlite3).

SQLAlchemy's per-statement cost was most of a small group commit's time on the writer
thread, and most of loading a snapshot's tail; the driver's tuples avoid it. Timestamps are
written as SQLAlchemy writes a DateTime in SQLite, so either path reads what the other wrote.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any, cast

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore.errors import DatabaseUnavailable

# One index probe per aggregate (SQLite's min/max optimisation of a correlated subquery): a
# `GROUP BY aggregate_id` over `IN (...)` read every version of each aggregate instead.
VERSIONS = (
    "WITH asked(aggregate_id) AS (VALUES {rows})"
    " SELECT aggregate_id,"
    " (SELECT max(version) FROM events WHERE events.aggregate_id = asked.aggregate_id)"
    " FROM asked"
)
LAST_POSITION = "SELECT coalesce(max(id), 0) FROM events"
INSERT_EVENT = (
    "INSERT INTO events (id, event_id, aggregate_id, aggregate_type, version, event_type,"
    " event_data, metadata, timestamp) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
INSERT_OUTBOX = (
    "INSERT INTO outbox (event_id, topic, key, headers, payload, created_at, attempts)"
    " VALUES (?, ?, ?, ?, ?, ?, 0)"
)
# `SqlSnapshotStore`'s upsert: a snapshot replaces an earlier one or one in another shape.
UPSERT_SNAPSHOT = (
    "INSERT INTO snapshots (aggregate_id, aggregate_type, version, state, schema_version,"
    " taken_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (aggregate_id) DO UPDATE SET"
    " aggregate_type = excluded.aggregate_type, version = excluded.version,"
    " state = excluded.state, schema_version = excluded.schema_version,"
    " taken_at = excluded.taken_at"
    " WHERE snapshots.version < excluded.version"
    " OR snapshots.schema_version != excluded.schema_version"
)
_COLUMNS = (
    "id, event_id, aggregate_id, aggregate_type, version, event_type, event_data, metadata,"
    " timestamp"
)
LOAD = f"SELECT {_COLUMNS} FROM events WHERE aggregate_id = ? AND version > ? ORDER BY version"
LOAD_TO = (
    f"SELECT {_COLUMNS} FROM events"
    " WHERE aggregate_id = ? AND version > ? AND version <= ? ORDER BY version"
)


def read_rows(reader: Engine, sql: str, params: tuple[Any, ...]) -> list[Any]:
    """The rows of one read on a pooled connection of `reader`, through the driver;
    `DatabaseUnavailable` naming the database if it fails."""
    try:
        connection = reader.raw_connection()
        try:
            rows: list[Any] = connection.cursor().execute(sql, params).fetchall()
            return rows
        finally:
            connection.close()
    except (SQLAlchemyError, sqlite3.Error) as exc:
        raise DatabaseUnavailable(engines.describe_failure(reader, exc)) from exc


def cursor(connection: Connection) -> sqlite3.Cursor:
    """A cursor on the driver connection under `connection`, inside its transaction."""
    return cast(sqlite3.Cursor, connection.connection.cursor())


PENDING_OUTBOX = (
    "SELECT id, event_id, topic, key, headers, payload, created_at, attempts FROM outbox"
    " WHERE published_at IS NULL ORDER BY id LIMIT ?"
)


def pending_outbox_skipping(singles: bool, ranges: int) -> str:
    """`PENDING_OUTBOX` without the ids of one parameter (a JSON array), if `singles`, and
    `ranges` spans of ids (two parameters each: first, last), all given before the limit."""
    skipped = " AND id NOT IN (SELECT value FROM json_each(?))" if singles else ""
    skipped += " AND id NOT BETWEEN ? AND ?" * ranges
    return PENDING_OUTBOX.replace("NULL ORDER", f"NULL{skipped} ORDER")


# One run of consecutive ids whose broker sequences are `id + offset` (NULL: not known).
MARK_OUTBOX_RUN = (
    "UPDATE outbox SET published_at = ?, attempts = attempts + 1, broker_sequence = id + ?"
    " WHERE id BETWEEN ? AND ?"
)


@contextmanager
def driver_transaction(writer: Engine, *, synced: bool = True) -> Iterator[Connection]:
    """A connection of `writer` under `BEGIN IMMEDIATE`, committed when the block ends
    cleanly and rolled back otherwise, both sent to the driver itself: for blocks whose every
    statement goes through the driver (`cursor`), as SQLAlchemy's own transaction bookkeeping
    costs as much again as a small batch's statements.

    `synced=False` commits without waiting for the disk (`synchronous=NORMAL` for this one
    transaction): the commit survives a process crash at once, and an OS crash or power loss
    from the next synced commit on, whose fsync of the write-ahead log covers it. For writes
    that may be lost and done again, such as the relay's marks."""
    with writer.connect() as connection:
        driver = connection.connection.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        with nullcontext() if synced else _synchronous_normal(driver, connection):
            driver.execute("BEGIN IMMEDIATE")
            try:
                yield connection
                driver.execute("COMMIT")
            except BaseException:
                if driver.in_transaction:  # a commit that failed may leave it open
                    driver.execute("ROLLBACK")
                raise


@contextmanager
def _synchronous_normal(driver: sqlite3.Connection, connection: Connection) -> Iterator[None]:
    """`PRAGMA synchronous=NORMAL` inside the block, the connection's own level after it; a
    connection whose level could not be put back is thrown away, never pooled."""
    level: int = driver.execute("PRAGMA synchronous").fetchone()[0]
    if level <= 1:  # already NORMAL or OFF
        yield
        return
    driver.execute("PRAGMA synchronous=NORMAL")
    try:
        yield
    finally:
        try:
            driver.execute(f"PRAGMA synchronous={level}")
        except sqlite3.Error:
            connection.invalidate()
            raise
