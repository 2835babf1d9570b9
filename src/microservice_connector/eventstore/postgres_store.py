"""The PostgreSQL event store: writers, in one process or many, commit side by side; the
global feed waits for late commits (`feed_horizon`) instead of writers waiting for each other."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
import psycopg
from sqlalchemy import Connection, Engine, bindparam, insert, select

from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore import feed_horizon
from microservice_connector.eventstore import postgres_statements as postgres_sql
from microservice_connector.eventstore.event_rows import (
    event_row,
    from_row,
    metadata_json,
    outbox_headers,
    outbox_row,
)
from microservice_connector.eventstore.idempotency_keys import KeyLedger
from microservice_connector.eventstore.port import AppendRequest, AppendResult
from microservice_connector.eventstore.postgres_connections import HeldConnection
from microservice_connector.eventstore.postgres_keys import PostgresKeyStatements
from microservice_connector.eventstore.schema import events, outbox
from microservice_connector.eventstore.sql import (
    EVENT_COLUMNS,
    Appended,
    SqlEventStore,
    found_versions,
    judge,
)

# Built once: loading is the hot path of every cache miss, and building costs more than running.
_LOAD = (
    select(*EVENT_COLUMNS)
    .where(
        events.c.aggregate_id == bindparam("aggregate_id"),
        events.c.version > bindparam("after"),
    )
    .order_by(events.c.version)
)
_LOAD_TO = _LOAD.where(events.c.version <= bindparam("to"))


class PostgresEventStore(SqlEventStore):
    """`SqlEventStore` on PostgreSQL: appends to different aggregates commit in parallel, and
    `read_all` never skips an event whose transaction commits after a later position's."""

    _key_statements = PostgresKeyStatements()

    def _create_dialect_schema(self) -> None:
        feed_horizon.install(self._writer)

    def _open_engines(
        self, url: str, sqlite_synchronous: engines.SqliteSynchronous
    ) -> tuple[Engine, Engine]:
        engine = engines.make_engine(url, writer=True)
        self._held = HeldConnection(engine)
        return engine, engine

    def _append_in_own_transaction(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """`append_batch`'s fast path in two round trips: BEGIN with the reads (versions,
        keys), then the writes with COMMIT; positions are taken by the events' insert."""
        with postgres_sql.pipelined_transaction(self._writer, self._held) as connection:
            versions = postgres_sql.driver(connection).cursor()
            versions.execute(postgres_sql.VERSIONS, [list({r.aggregate_id for r in requests})])
            keys = KeyLedger(connection, requests, self._key_statements)
            current = found_versions(versions.fetchall())
            results, accepted = judge(requests, current, keys)
            # Recorded at position 0 here, and at the positions the insert took once it ran.
            appended = self._recorded(accepted, results, itertools.repeat(0))
            inserted = self._queue_inserts(connection, appended)
            keys.write()
        if inserted is not None:
            taken: dict[str, int] = dict(inserted.fetchall())
            for slot, _ in accepted:
                stored = results[slot]
                assert isinstance(stored, list)
                results[slot] = [
                    msgspec.structs.replace(event, position=taken[event.event_id])
                    for event in stored
                ]
        return results

    def _queue_inserts(
        self, connection: Connection, appended: Sequence[Appended]
    ) -> psycopg.Cursor[Any] | None:
        """Queue the statement that takes positions for the events and inserts them and their
        outbox rows; the cursor whose rows will be each event's id and position."""
        stored = [event for _, events_ in appended for event in events_]
        if not stored:
            return None
        rows: dict[str, Any] = {
            "count": len(stored),
            "event_ids": [e.event_id for e in stored],
            "aggregate_ids": [e.aggregate_id for e in stored],
            "aggregate_types": [e.aggregate_type for e in stored],
            "versions": [e.version for e in stored],
            "event_types": [e.event_type for e in stored],
            "event_data": [e.event_data for e in stored],
            "metadata": [metadata_json(e) for e in stored],
            "timestamps": [e.timestamp for e in stored],
        }
        statement = postgres_sql.INSERT_EVENTS
        if self._outbox_topic is not None:
            statement = postgres_sql.INSERT_EVENTS_AND_OUTBOX
            rows["headers"] = [outbox_headers(e) for e in stored]
            rows["topic"] = self._outbox_topic
            rows["created_at"] = datetime.now(UTC)
        inserted = postgres_sql.driver(connection).cursor()
        inserted.execute(statement, rows)
        return inserted

    def _versions(self, connection: Connection, aggregate_ids: set[str]) -> dict[str, int]:
        with postgres_sql.sqlalchemy_errors():
            cursor = postgres_sql.driver(connection).cursor()
            return found_versions(
                cursor.execute(postgres_sql.VERSIONS, [list(aggregate_ids)]).fetchall()
            )

    def _positions(self, connection: Connection, count: int) -> list[int]:
        if count == 0:
            return []
        return list(connection.execute(feed_horizon.TAKE_POSITIONS, {"count": count}).scalars())

    def _insert_events(self, connection: Connection, stored: Sequence[RecordedEvent]) -> None:
        connection.execute(insert(events), [event_row(event) for event in stored])

    def _insert_outbox(
        self, connection: Connection, stored: Sequence[RecordedEvent], topic: str
    ) -> None:
        connection.execute(insert(outbox), [outbox_row(event, topic) for event in stored])

    def _load_range(
        self, aggregate_id: str, after_version: int, to_version: int | None
    ) -> list[RecordedEvent]:
        params = {"aggregate_id": aggregate_id, "after": after_version, "to": to_version}
        return self._read(_LOAD if to_version is None else _LOAD_TO, params)

    def close(self) -> None:
        """Give back the writer's held connection and dispose of the engine's connections."""
        self._held.close()
        super().close()

    def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Up to `limit` events with position > `after_position`, in position order, stopping
        before the first position whose transaction may still commit: an event committed
        late is never skipped by a reader that paged past its position."""
        with self._reading() as connection:
            # Whatever the server's default: the page needs a snapshot newer than `end`.
            connection.execution_options(isolation_level="READ COMMITTED")
            end = connection.execute(feed_horizon.FEED_END).scalar_one()
            page = self._feed(after_position, limit).where(events.c.id < end)
            return [from_row(row) for row in connection.execute(page).all()]
