"""The SQLAlchemy event store: SQLite (one writer, WAL) or PostgreSQL, events plus outbox rows."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from microservice_connector.events.codec import Codec, JsonCodec
from microservice_connector.events.envelope import NewEvent, RecordedEvent
from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore import sqlite_statements as sqlite_sql
from microservice_connector.eventstore.errors import ConcurrencyError, DatabaseUnavailable
from microservice_connector.eventstore.event_rows import (
    event_row,
    from_row,
    outbox_row,
    sqlite_event_row,
    sqlite_outbox_row,
    sqlite_time,
)
from microservice_connector.eventstore.idempotency_keys import KeyLedger, SqlIdempotencyKeys
from microservice_connector.eventstore.outbox import SqlOutbox
from microservice_connector.eventstore.port import AppendRequest, AppendResult
from microservice_connector.eventstore.schema import events, outbox
from microservice_connector.eventstore.sql_snapshots import SqlSnapshotStore

# Any fixed 64-bit number; every store writing to one PostgreSQL database takes the same one.
_WRITER_LOCK_KEY = 0x6D73_635F_6576_7473  # "msc_evts"
_ADVISORY_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_NEXT_IDS = text(
    "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, :count)"
)
# deadlock_detected, serialization_failure: the transaction lost a race and wrote nothing.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})

_EVENT_COLUMNS = (
    events.c.id,
    events.c.event_id,
    events.c.aggregate_id,
    events.c.aggregate_type,
    events.c.version,
    events.c.event_type,
    events.c.event_data,
    events.c["metadata"],
    events.c.timestamp,
)
# Built once: loading is the hot path of every cache miss, and building costs more than running.
_LOAD = (
    select(*_EVENT_COLUMNS)
    .where(
        events.c.aggregate_id == bindparam("aggregate_id"),
        events.c.version > bindparam("after"),
    )
    .order_by(events.c.version)
)
_LOAD_TO = _LOAD.where(events.c.version <= bindparam("to"))


class SqlEventStore:
    """Events and their outbox rows in one transaction; `UNIQUE(aggregate_id, version)` guards."""

    def __init__(
        self,
        url: str,
        *,
        outbox_topic: str | None = "cart.events",
        sqlite_synchronous: engines.SqliteSynchronous = "FULL",
        codec: Codec | None = None,
    ) -> None:
        self._outbox_topic = outbox_topic
        self._codec = codec or JsonCodec()
        self._writer = engines.make_engine(url, writer=True, sqlite_synchronous=sqlite_synchronous)
        is_sqlite = self._writer.dialect.name == "sqlite"
        self._reader = (
            engines.make_engine(url, sqlite_synchronous=sqlite_synchronous)
            if is_sqlite
            else self._writer
        )
        self._serialise_writers = not is_sqlite
        engines.create_schema(self._writer)

    @property
    def outbox(self) -> SqlOutbox:
        """The outbox rows this store writes, for the relay and for `msc outbox status`."""
        return SqlOutbox(self._writer, self._reader)

    @property
    def snapshots(self) -> SqlSnapshotStore:
        """The `snapshots` table of this database, for loading aggregates fast."""
        return SqlSnapshotStore(self._writer, self._reader)

    @property
    def idempotency_keys(self) -> SqlIdempotencyKeys:
        """The idempotency keys appends recorded, to find a command's first answer."""
        return SqlIdempotencyKeys(self._writer, self._reader)

    @property
    def writer(self) -> Engine:
        """The engine appends go through; a caller's own writes in its transactions commit
        atomically with `append_in`."""
        return self._writer

    def append_in(self, connection: Connection, request: AppendRequest) -> list[RecordedEvent]:
        """Append inside the caller's transaction on `writer`; raises `ConcurrencyError`."""
        self._take_turn(connection)
        [result] = self._append_together(connection, [request])
        if not isinstance(result, list):
            raise result
        return result

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return self._writer.url.render_as_string(hide_password=True)

    def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Write all events and outbox rows atomically, or raise `ConcurrencyError`."""
        result = self.append_batch([request])[0]
        if not isinstance(result, list):
            raise result
        return result

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """One commit for many appends; each is checked against its own expected version.

        On PostgreSQL, writers take turns (a transaction-scoped advisory lock), so positions
        become visible in order and a feed reader never skips an event committed late.
        """
        try:
            try:
                with self._writer.begin() as connection:
                    self._take_turn(connection)
                    return self._append_together(connection, requests)
            except (IntegrityError, sqlite3.IntegrityError):
                # A writer outside this store won a race inside the batch: redo it one
                # append at a time, so that only the losers fail.
                with self._writer.begin() as connection:
                    self._take_turn(connection)
                    return [self._append_one(connection, request) for request in requests]
        except DBAPIError as exc:
            if _is_transient_conflict(exc):
                return [
                    ConcurrencyError(r.aggregate_id, r.expected_version, None) for r in requests
                ]
            raise DatabaseUnavailable(engines.describe_failure(self._writer, exc)) from exc
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._writer, exc)) from exc

    def _take_turn(self, connection: Connection) -> None:
        if self._serialise_writers:
            connection.execute(_ADVISORY_LOCK, {"key": _WRITER_LOCK_KEY})

    def _append_together(
        self, connection: Connection, requests: Sequence[AppendRequest]
    ) -> list[AppendResult]:
        """The fast path: one version query and one insert per table for the whole batch."""
        current = self._versions(connection, {request.aggregate_id for request in requests})
        keys = KeyLedger(connection, requests)
        accepted: list[tuple[int, AppendRequest]] = []
        results: list[AppendResult] = []
        for request in requests:
            if used := keys.used(request):
                results.append(used)
                continue
            version = current.get(request.aggregate_id, 0)
            if version != request.expected_version:
                results.append(
                    ConcurrencyError(request.aggregate_id, request.expected_version, version)
                )
                continue
            current[request.aggregate_id] = version + len(request.events)
            keys.accept(request, version + len(request.events))
            accepted.append((len(results), request))
            results.append([])
        positions = iter(self._positions(connection, sum(len(r.events) for _, r in accepted)))
        written: list[RecordedEvent] = []
        for slot, request in accepted:
            recorded = [
                _record(
                    request, event, request.expected_version + offset, next(positions), self._codec
                )
                for offset, event in enumerate(request.events, start=1)
            ]
            results[slot] = recorded
            written.extend(recorded)
        self._insert(connection, written)
        keys.write()
        return results

    def _versions(self, connection: Connection, aggregate_ids: set[str]) -> dict[str, int]:
        """Each aggregate's current version, for those that have events."""
        if self._serialise_writers:  # PostgreSQL
            query = (
                select(events.c.aggregate_id, func.max(events.c.version))
                .where(events.c.aggregate_id.in_(aggregate_ids))
                .group_by(events.c.aggregate_id)
            )
            return {aggregate_id: version for aggregate_id, version in connection.execute(query)}
        ids = list(aggregate_ids)
        sql = sqlite_sql.VERSIONS.format(marks=",".join("?" * len(ids)))
        return dict(sqlite_sql.cursor(connection).execute(sql, ids).fetchall())

    def _append_one(self, connection: Connection, request: AppendRequest) -> AppendResult:
        keys = KeyLedger(connection, [request])
        if used := keys.used(request):
            return used
        current = connection.execute(
            select(func.max(events.c.version)).where(events.c.aggregate_id == request.aggregate_id)
        ).scalar_one()
        current = current or 0
        if current != request.expected_version:
            return ConcurrencyError(request.aggregate_id, request.expected_version, current)
        if not request.events and request.idempotency is None:
            return []
        try:
            # A savepoint, so a lost race fails this append and not the batch.
            with connection.begin_nested():
                positions = self._positions(connection, len(request.events))
                recorded = [
                    _record(request, event, current + offset, position, self._codec)
                    for (offset, event), position in zip(
                        enumerate(request.events, start=1), positions, strict=True
                    )
                ]
                self._insert(connection, recorded)
                keys.accept(request, current + len(request.events))
                keys.write()
        except (IntegrityError, sqlite3.IntegrityError):
            return ConcurrencyError(request.aggregate_id, request.expected_version, None)
        return recorded

    def _positions(self, connection: Connection, count: int) -> list[int]:
        """The next `count` global positions. Writers take turns, so nobody else takes them."""
        if count == 0:
            return []
        if self._serialise_writers:  # PostgreSQL: from the column's own sequence
            return list(connection.execute(_NEXT_IDS, {"count": count}).scalars())
        last: int = sqlite_sql.cursor(connection).execute(sqlite_sql.LAST_POSITION).fetchone()[0]
        return list(range(last + 1, last + 1 + count))

    def _insert(self, connection: Connection, recorded: list[RecordedEvent]) -> None:
        if not recorded:
            return
        if self._serialise_writers:  # PostgreSQL
            connection.execute(insert(events), [event_row(event) for event in recorded])
            if self._outbox_topic is not None:
                connection.execute(
                    insert(outbox), [outbox_row(event, self._outbox_topic) for event in recorded]
                )
            return
        # SQLite: the driver's executemany with tuples, text timestamps as SQLAlchemy writes them.
        cursor = sqlite_sql.cursor(connection)
        cursor.executemany(sqlite_sql.INSERT_EVENT, [sqlite_event_row(e) for e in recorded])
        if self._outbox_topic is not None:
            created_at = sqlite_time(datetime.now(UTC))
            cursor.executemany(
                sqlite_sql.INSERT_OUTBOX,
                [sqlite_outbox_row(e, self._outbox_topic, created_at) for e in recorded],
            )

    def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events with `after_version < version <= to_version`, oldest first."""
        if self._serialise_writers:  # PostgreSQL
            params = {"aggregate_id": aggregate_id, "after": after_version, "to": to_version}
            return self._read(_LOAD if to_version is None else _LOAD_TO, params)
        if to_version is None:
            return self._read_sqlite(sqlite_sql.LOAD, (aggregate_id, after_version))
        return self._read_sqlite(sqlite_sql.LOAD_TO, (aggregate_id, after_version, to_version))

    def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Up to `limit` events with position > `after_position`, in position order."""
        query = (
            select(*_EVENT_COLUMNS)
            .where(events.c.id > after_position)
            .order_by(events.c.id)
            .limit(limit)
        )
        return self._read(query)

    def find(self, event_id: str) -> RecordedEvent | None:
        """The stored event with this `event_id`, or None."""
        found = self._read(select(*_EVENT_COLUMNS).where(events.c.event_id == event_id))
        return found[0] if found else None

    def last_position(self) -> int:
        """The newest event's position; 0 for an empty store."""
        try:
            with self._reader.connect() as connection:
                return int(connection.execute(select(func.max(events.c.id))).scalar() or 0)
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._reader, exc)) from exc

    def _read(self, query: Any, params: dict[str, Any] | None = None) -> list[RecordedEvent]:
        try:
            with self._reader.connect() as connection:
                return [from_row(row) for row in connection.execute(query, params).all()]
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._reader, exc)) from exc

    def _read_sqlite(self, sql: str, params: tuple[Any, ...]) -> list[RecordedEvent]:
        """A load on the reader's pooled connection through the sqlite3 driver directly."""
        try:
            connection = self._reader.raw_connection()
            try:
                rows = connection.cursor().execute(sql, params).fetchall()
            finally:
                connection.close()
        except (SQLAlchemyError, sqlite3.Error) as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._reader, exc)) from exc
        return [from_row(row) for row in rows]

    def ping(self) -> None:
        """Raise `DatabaseUnavailable` unless the database answers."""
        engines.ping(self._reader)

    def close(self) -> None:
        """Dispose of both engines' connections."""
        self._writer.dispose()
        self._reader.dispose()


def _is_transient_conflict(exc: DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES


def _record(
    request: AppendRequest, event: NewEvent, version: int, position: int, codec: Codec
) -> RecordedEvent:
    return RecordedEvent(
        position=position,
        event_id=event.event_id or str(uuid.uuid4()),
        aggregate_id=request.aggregate_id,
        aggregate_type=request.aggregate_type,
        version=version,
        event_type=event.event_type,
        schema_version=event.schema_version,
        content_type=codec.content_type,
        event_data=codec.encode(event.event_type, event.payload),
        timestamp=event.timestamp.astimezone(UTC),
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        traceparent=event.traceparent,
        tracestate=event.tracestate,
    )
