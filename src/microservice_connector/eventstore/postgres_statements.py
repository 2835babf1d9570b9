"""The PostgreSQL event store's hot statements as plain SQL for psycopg, and the pipelined
transaction they run in.

A group commit through SQLAlchemy took six round trips (BEGIN, versions, positions, events,
outbox rows, COMMIT) and SQLAlchemy's statement building cost as much CPU again; the
appenders of several instances on one machine queued behind both. Here a batch costs two
round trips: its reads (versions, idempotency keys) go together with BEGIN, and its writes
(one statement taking positions and inserting events and outbox rows; keys) together
with COMMIT. Each statement's text is fixed
(arrays, not one parameter per row), so psycopg prepares it once per connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, cast

import psycopg
from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError, StatementError

from microservice_connector.eventstore.postgres_connections import HeldConnection

# One index probe per aggregate, whatever the statistics say: the newest row at or below
# (aggregate, the largest `integer`, the column's type) in the `(aggregate_id, version)` key,
# and NULL when that row is another aggregate's (this one has no events). `max(version)
# WHERE aggregate_id = ...` left the planner a choice: with statistics that give an aggregate
# a few events (a young store's, or one whose aggregates are mostly short), or a plan cached
# from them, it read every version of a long aggregate through `idx_events_aggregate_id`, or
# the whole table. The row comparison is an index condition of the two-column key, which
# returns its rows in the order asked; any other index would have to read at least all of
# the aggregate's rows and sort them (tests/integration/test_postgres_appends.py).
VERSIONS = """SELECT asked.aggregate_id, (
    SELECT CASE WHEN newest.aggregate_id = asked.aggregate_id THEN newest.version END
    FROM events AS newest
    WHERE (newest.aggregate_id, newest.version) <= (asked.aggregate_id, 2147483647)
    ORDER BY newest.aggregate_id DESC, newest.version DESC
    LIMIT 1)
FROM unnest(%b::text[]) AS asked(aggregate_id)"""
# Positions come from `msc_take_positions` (feed_horizon), called once for the statement (a
# materialized CTE: a function scan inside a join may be run again), matched to the rows in
# order; the rows' event ids come back with their positions.
_TAKE_AND_INSERT_EVENTS = """taken AS MATERIALIZED (
    SELECT position, n FROM msc_take_positions(%(count)s) WITH ORDINALITY AS t(position, n)
), inserted AS (
    INSERT INTO events (id, event_id, aggregate_id, aggregate_type, version, event_type,
        event_data, metadata, timestamp)
    SELECT taken.position, row.event_id, row.aggregate_id, row.aggregate_type, row.version,
        row.event_type, row.event_data, row.metadata, row.timestamp
    FROM unnest(%(event_ids)b::text[], %(aggregate_ids)b::text[],
            %(aggregate_types)b::text[], %(versions)b::integer[], %(event_types)b::text[],
            %(event_data)b::bytea[], %(metadata)b::text[], %(timestamps)b::timestamptz[])
        WITH ORDINALITY AS row(event_id, aggregate_id, aggregate_type, version, event_type,
            event_data, metadata, timestamp, n)
    JOIN taken USING (n)
    ORDER BY n
    RETURNING event_id, id, aggregate_id, event_data
)"""
INSERT_EVENTS = f"""WITH {_TAKE_AND_INSERT_EVENTS}
SELECT event_id, id FROM inserted"""
# The same, and each event's outbox row: ordered by position, so that outbox ids (the
# relay's publishing order) follow the events'. The events are inserted before their outbox
# rows, as every path of the store writes them.
INSERT_EVENTS_AND_OUTBOX = f"""WITH {_TAKE_AND_INSERT_EVENTS}, outboxed AS (
    INSERT INTO outbox (event_id, topic, key, headers, payload, created_at, attempts)
    SELECT inserted.event_id, %(topic)s, inserted.aggregate_id, row.headers,
        inserted.event_data, %(created_at)s, 0
    FROM inserted JOIN unnest(%(event_ids)b::text[], %(headers)b::text[])
        AS row(event_id, headers) USING (event_id)
    ORDER BY inserted.id
)
SELECT event_id, id FROM inserted"""
SELECT_KEYS = (
    "SELECT key, fingerprint, aggregate_id, version, expires_at FROM idempotency_keys"
    " WHERE key = ANY(%b::text[])"
)
DELETE_EXPIRED_KEYS = (
    "DELETE FROM idempotency_keys WHERE key = ANY(%b::text[]) AND expires_at <= %s"
)
# The lifetime counts from when the row is written (`clock_timestamp()`), not from when the
# transaction began (`now()`, or the caller's clock then): a transaction that waited for a
# lock longer than the lifetime recorded a key already expired, and its retry was applied.
INSERT_KEY = (
    "INSERT INTO idempotency_keys (key, fingerprint, aggregate_id, version, created_at,"
    " expires_at) VALUES (%s, %s, %s, %s, %s, clock_timestamp() + %s)"
)


def driver(connection: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under `connection`; its statements share its transaction."""
    return cast("psycopg.Connection[Any]", connection.connection.driver_connection)


@contextmanager
def pipelined_transaction(writer: Engine, held: HeldConnection) -> Iterator[Connection]:
    """A connection of `writer` (`held`'s when free) whose driver runs in pipeline mode
    inside a transaction: statements queue until a result is fetched or the block ends,
    which sends `COMMIT` with what is still queued; any failure rolls back. A driver error
    comes out as SQLAlchemy's exception of its kind (`IntegrityError`, `OperationalError`...),
    the connection invalidated when it broke, as if SQLAlchemy had run the statement."""
    with held.connection() as connection:
        psycopg_connection = driver(connection)
        try:
            with psycopg_connection.pipeline():
                yield connection
                # Queued, not `commit()`: that would wait for its answer, and leaving the
                # pipeline would then wait for another.
                psycopg_connection.execute("COMMIT")
            if connection.in_transaction():  # SQLAlchemy began one for a statement of its own
                connection.rollback()  # nothing left to roll back: no round trip
        except BaseException as exc:
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            broken = psycopg_connection.broken or (
                isinstance(orig, psycopg.Error)
                and writer.dialect.is_disconnect(cast(Any, orig), connection.connection, None)
            )
            if broken:
                connection.invalidate(exc)
            else:
                with suppress(psycopg.Error):
                    psycopg_connection.rollback()
            if not isinstance(exc, psycopg.Error):
                raise
            raise translated(exc, invalidated=broken) from exc


@contextmanager
def sqlalchemy_errors() -> Iterator[None]:
    """Driver errors raised in the block come out as SQLAlchemy's exception of their kind,
    which is what every caller of a statement run through SQLAlchemy catches."""
    try:
        yield
    except psycopg.Error as exc:
        raise translated(exc) from exc


def translated(exc: psycopg.Error, *, invalidated: bool = False) -> StatementError:
    """SQLAlchemy's exception for the driver's `exc`: `IntegrityError` for a duplicate key,
    `OperationalError` for a lost connection, and so on."""
    return DBAPIError.instance(None, None, exc, psycopg.Error, connection_invalidated=invalidated)
