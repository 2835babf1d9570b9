"""The PostgreSQL event store: writers, in one process or many, commit side by side; the
global feed waits for late commits (`feed_horizon`) instead of writers waiting for each other."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, Engine, bindparam, func, insert, select

from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore import engine as engines
from microservice_connector.eventstore import feed_horizon
from microservice_connector.eventstore.event_rows import event_row, from_row, outbox_row
from microservice_connector.eventstore.postgres_keys import PostgresKeyStatements
from microservice_connector.eventstore.schema import events, outbox
from microservice_connector.eventstore.sql import EVENT_COLUMNS, SqlEventStore

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
        return engine, engine

    def _versions(self, connection: Connection, aggregate_ids: set[str]) -> dict[str, int]:
        query = (
            select(events.c.aggregate_id, func.max(events.c.version))
            .where(events.c.aggregate_id.in_(aggregate_ids))
            .group_by(events.c.aggregate_id)
        )
        return {aggregate_id: version for aggregate_id, version in connection.execute(query)}

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

    def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events with `after_version < version <= to_version`, oldest first."""
        params = {"aggregate_id": aggregate_id, "after": after_version, "to": to_version}
        return self._read(_LOAD if to_version is None else _LOAD_TO, params)

    def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """Up to `limit` events with position > `after_position`, in position order, stopping
        before the first position whose transaction may still commit: an event committed
        late is never skipped by a reader that paged past its position."""
        with self._reading() as connection:
            end = connection.execute(feed_horizon.FEED_END).scalar_one()
            page = self._feed(after_position, limit).where(events.c.id < end)
            return [from_row(row) for row in connection.execute(page).all()]
