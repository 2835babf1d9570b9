"""The SQL event store: what SQLite and PostgreSQL share (the append pipeline, reads, errors);
each dialect's adapter supplies its engines, versions, positions, inserts and loads."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Select, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from microservice_connector.events.codec import Codec, JsonCodec
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore.errors import ConcurrencyError, DatabaseUnavailable
from microservice_connector.eventstore.event_rows import from_row, recorded
from microservice_connector.eventstore.failures import DataRejected, Failure, classify
from microservice_connector.eventstore.idempotency_keys import (
    KeyLedger,
    KeyStatements,
    SqlIdempotencyKeys,
)
from microservice_connector.eventstore.outbox import SqlOutbox
from microservice_connector.eventstore.port import AppendRequest, AppendResult, events_or_raise
from microservice_connector.eventstore.schema import MAX_VERSION, events
from microservice_connector.eventstore.sql_snapshots import SqlSnapshotStore

EVENT_COLUMNS = (
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
# An append together with what it stored; whatever else an append writes is derived from it.
Appended = tuple[AppendRequest, list[RecordedEvent]]


def judge(
    requests: Sequence[AppendRequest], current: dict[str, int], keys: KeyLedger
) -> tuple[list[AppendResult], list[tuple[int, AppendRequest]]]:
    """Each request's answer when its key was used or its expected version is not the
    aggregate's (`current`, advanced by the batch's earlier accepted appends), and the
    accepted requests with their slots in the answers, whose keys `keys` now holds."""
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
    return results, accepted


def found_versions(rows: Iterable[tuple[str, int | None]]) -> dict[str, int]:
    """Each aggregate's version from (aggregate id, highest version or None) rows; none for
    those without events."""
    return {aggregate_id: version for aggregate_id, version in rows if version is not None}


def event_count(accepted: Sequence[tuple[int, AppendRequest]]) -> int:
    """How many events the accepted appends store."""
    return sum(len(request.events) for _, request in accepted)


class SqlEventStore:
    """Events and their outbox rows in one transaction; `UNIQUE(aggregate_id, version)` guards.

    `SqlEventStore(url, ...)` opens the adapter of the URL's dialect (`SqliteEventStore`,
    `PostgresEventStore`). A failed append raises `DatabaseUnavailable` when the database may
    heal (down, busy, full) and `DataRejected` when it refused the data itself.
    """

    def __new__(cls, url: str, **_options: Any) -> SqlEventStore:
        """The adapter for `url`'s dialect when called on this base class."""
        if cls is SqlEventStore:
            # Imported here because the adapters subclass this class.
            from microservice_connector.eventstore.postgres_store import PostgresEventStore
            from microservice_connector.eventstore.sqlite_store import SqliteEventStore

            backend = engines.parse_database_url(url).get_backend_name()
            cls = SqliteEventStore if backend == "sqlite" else PostgresEventStore
        return super().__new__(cls)

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
        self._writer, self._reader = self._open_engines(url, sqlite_synchronous)
        engines.create_schema(self._writer)
        self._create_dialect_schema()

    # --- what each dialect's adapter defines; `SqlEventStore(url)` opens the adapter --------

    _key_statements: KeyStatements  # its reads and inserts of idempotency keys

    def _open_engines(
        self, url: str, sqlite_synchronous: engines.SqliteSynchronous
    ) -> tuple[Engine, Engine]:
        """The writer engine and the reader engine (they may be one)."""
        raise NotImplementedError

    def _create_dialect_schema(self) -> None:
        """Create what this dialect needs beyond the tables; nothing unless overridden."""

    def _versions(self, connection: Connection, aggregate_ids: set[str]) -> dict[str, int]:
        """Each aggregate's current version, for those that have events."""
        raise NotImplementedError

    def _positions(self, connection: Connection, count: int) -> list[int]:
        """The next `count` global positions, reserved for this transaction."""
        raise NotImplementedError

    def _insert_events(self, connection: Connection, stored: Sequence[RecordedEvent]) -> None:
        """Insert the `events` rows of `stored`."""
        raise NotImplementedError

    def _insert_outbox(
        self, connection: Connection, stored: Sequence[RecordedEvent], topic: str
    ) -> None:
        """Insert one `outbox` row per event of `stored`, publishing it to `topic`."""
        raise NotImplementedError

    def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events with `after_version < version <= to_version`, oldest first;
        bounds past what a version column holds (any integer) find what is there, alike on
        every database."""
        if after_version >= MAX_VERSION or (to_version is not None and to_version < 1):
            return []
        after = max(after_version, 0)
        to = None if to_version is None or to_version >= MAX_VERSION else to_version
        return self._load_range(aggregate_id, after, to)

    def _load_range(
        self, aggregate_id: str, after_version: int, to_version: int | None
    ) -> list[RecordedEvent]:
        """`load`, its bounds within the version column's range."""
        raise NotImplementedError

    def _feed(self, after_position: int, limit: int) -> Select[Any]:
        """The query of the global feed's page after `after_position`, by position."""
        return (
            select(*EVENT_COLUMNS)
            .where(events.c.id > after_position)
            .order_by(events.c.id)
            .limit(limit)
        )

    # --- shared -------------------------------------------------------------------------

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
        return SqlIdempotencyKeys(self._writer, self._reader, self._key_statements)

    @property
    def writer(self) -> Engine:
        """The engine this store's own appends go through; a caller with a writer connection
        of its own to this database appends on it with `append_in` instead."""
        return self._writer

    @property
    def reader(self) -> Engine:
        """The engine this store reads through: on SQLite WAL readers that never wait for a
        writer; on PostgreSQL the writer's pool."""
        return self._reader

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return engines.describe(self._writer)

    def append_in(self, connection: Connection, request: AppendRequest) -> list[RecordedEvent]:
        """Append inside the transaction of `connection`, a writer connection to this store's
        database that the caller owns (on SQLite one holding the write lock: `BEGIN
        IMMEDIATE`); it commits or rolls back with the caller's other writes. Raises
        `ConcurrencyError`."""
        [result] = self._append_together(connection, [request])
        return events_or_raise(result)

    def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Write all events and outbox rows atomically, or raise `ConcurrencyError`."""
        return events_or_raise(self.append_batch([request])[0])

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """One commit for many appends; each is checked against its own expected version.
        Raises `DatabaseUnavailable` (may heal) or `DataRejected` (never will) for the whole
        batch, which then wrote nothing."""
        try:
            try:
                return self._append_in_own_transaction(requests)
            except (IntegrityError, sqlite3.IntegrityError):
                # A writer outside this store won a race inside the batch: redo it one
                # append at a time, so that only the losers fail.
                with self._writer.begin() as connection:
                    return [self._append_one(connection, request) for request in requests]
        except (SQLAlchemyError, sqlite3.Error) as exc:
            failure = classify(exc)
            if failure is Failure.RACE:  # the transaction lost and wrote nothing
                return [
                    ConcurrencyError(r.aggregate_id, r.expected_version, None) for r in requests
                ]
            if failure is Failure.TRANSIENT:
                raise DatabaseUnavailable(engines.describe_failure(self._writer, exc)) from exc
            raise DataRejected(engines.describe_refusal(self._writer, exc)) from exc

    def _append_in_own_transaction(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        """`append_batch`'s fast path: the batch in one transaction of its own, committed
        here; raises `IntegrityError` when a writer outside this store won a race in it."""
        with self._writer.begin() as connection:
            return self._append_together(connection, requests)

    def _append_together(
        self, connection: Connection, requests: Sequence[AppendRequest]
    ) -> list[AppendResult]:
        """The fast path: one version query and one insert per table for the whole batch."""
        current = self._versions(connection, {request.aggregate_id for request in requests})
        keys = KeyLedger(connection, requests, self._key_statements)
        results, accepted = judge(requests, current, keys)
        positions = iter(self._positions(connection, event_count(accepted)))
        appended = self._recorded(accepted, results, positions)
        self._write(connection, appended)
        keys.write()
        return results

    def _recorded(
        self,
        accepted: Sequence[tuple[int, AppendRequest]],
        results: list[AppendResult],
        positions: Iterator[int],
    ) -> list[Appended]:
        """The events of the `accepted` appends as stored, at the next `positions`; each
        append's slot of `results` holds its events."""
        appended: list[Appended] = []
        codec = self._codec
        for slot, request in accepted:
            results[slot] = stored = [
                recorded(request, event, request.expected_version + offset, next(positions), codec)
                for offset, event in enumerate(request.events, start=1)
            ]
            appended.append((request, stored))
        return appended

    def _append_one(self, connection: Connection, request: AppendRequest) -> AppendResult:
        keys = KeyLedger(connection, [request], self._key_statements)
        if used := keys.used(request):
            return used
        current = self._versions(connection, {request.aggregate_id}).get(request.aggregate_id, 0)
        if current != request.expected_version:
            return ConcurrencyError(request.aggregate_id, request.expected_version, current)
        if not request.events and request.idempotency is None:
            return []
        try:
            # A savepoint, so a lost race fails this append and not the batch.
            with connection.begin_nested():
                positions = self._positions(connection, len(request.events))
                stored = [
                    recorded(request, event, current + offset, position, self._codec)
                    for (offset, event), position in zip(
                        enumerate(request.events, start=1), positions, strict=True
                    )
                ]
                self._write(connection, [(request, stored)])
                keys.accept(request, current + len(request.events))
                keys.write()
        except (IntegrityError, sqlite3.IntegrityError):
            return ConcurrencyError(request.aggregate_id, request.expected_version, None)
        return stored

    def _write(self, connection: Connection, appended: Sequence[Appended]) -> None:
        """Everything the appends write, in the caller's transaction: their events and, with
        an outbox topic, one outbox row each. Every row kind that goes with an append is
        written here, so all paths (batch, one by one, `append_in`) write the same."""
        stored = [event for _, events_ in appended for event in events_]
        if not stored:
            return
        self._insert_events(connection, stored)
        if self._outbox_topic is not None:
            self._insert_outbox(connection, stored, self._outbox_topic)

    def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Up to `limit` events with position > `after_position`, in position order; an event
        committed late is never skipped by a reader that paged past its position."""
        return self._read(self._feed(after_position, limit))

    def find(self, event_id: str) -> RecordedEvent | None:
        """The stored event with this `event_id`, or None."""
        found = self._read(select(*EVENT_COLUMNS).where(events.c.event_id == event_id))
        return found[0] if found else None

    def last_position(self) -> int:
        """The newest event's position; 0 for an empty store."""
        with self._reading() as connection:
            return int(connection.execute(select(func.max(events.c.id))).scalar() or 0)

    def _read(self, query: Any, params: dict[str, Any] | None = None) -> list[RecordedEvent]:
        with self._reading() as connection:
            return [from_row(row) for row in connection.execute(query, params).all()]

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A reader connection; any database failure becomes `DatabaseUnavailable`."""
        try:
            with self._reader.connect() as connection:
                yield connection
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(engines.describe_failure(self._reader, exc)) from exc

    def ping(self) -> None:
        """Raise `DatabaseUnavailable` unless the database answers."""
        engines.ping(self._reader)

    def close(self) -> None:
        """Dispose of both engines' connections."""
        self._writer.dispose()
        self._reader.dispose()
