"""The SQLite fast paths (its own driver, no SQLAlchemy) write and read rows exactly as
SQLAlchemy does, so either path reads what the other wrote."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import msgspec
from sqlalchemy import insert, select
from sqlalchemy.dialects.sqlite.base import DATETIME, SQLiteDialect

from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore
from microservice_connector.eventstore.event_rows import event_row, sqlite_time
from microservice_connector.eventstore.schema import events, outbox

AT = datetime(2026, 3, 4, 5, 6, 7, 89, tzinfo=UTC)


def added(cart: str, quantity: int) -> NewEvent:
    return NewEvent("ItemAdded", ItemAdded(cart, "item-1", quantity, AT), AT, correlation_id="c")


def test_rows_written_by_the_driver_read_back_through_sqlalchemy(tmp_path: Path) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        [written] = store.append(AppendRequest("cart-1", "ShoppingCart", 0, [added("cart-1", 2)]))
        with store.writer.connect() as connection:
            row = connection.execute(select(events).where(events.c.id == written.position)).one()
            box = connection.execute(select(outbox)).one()
        assert row.timestamp.replace(tzinfo=UTC) == AT
        assert (row.event_id, row.version, row.event_data) == (
            written.event_id,
            1,
            written.event_data,
        )
        assert (box.event_id, box.key, box.attempts, box.published_at) == (
            written.event_id,
            "cart-1",
            0,
            None,
        )
        assert store.read_all() == store.load("cart-1") == [written]  # SQLAlchemy vs driver
    finally:
        store.close()


def test_rows_written_by_sqlalchemy_load_through_the_driver(tmp_path: Path) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}", outbox_topic=None)
    try:
        [first] = store.append(AppendRequest("cart-1", "ShoppingCart", 0, [added("cart-1", 1)]))
        second = msgspec.structs.replace(first, position=2, version=2, event_id="e-2")
        with store.writer.begin() as connection:
            connection.execute(insert(events), [event_row(second)])
        assert store.load("cart-1") == [first, second]
        assert store.load("cart-1", after_version=1, to_version=2) == [second]
    finally:
        store.close()


def test_text_timestamps_match_sqlalchemys_format() -> None:
    bind = DATETIME(timezone=True).bind_processor(SQLiteDialect())
    assert bind is not None
    for moment in (AT, AT.replace(microsecond=0), datetime.now(UTC)):
        assert sqlite_time(moment) == bind(moment)


def test_an_append_does_not_read_the_aggregates_history(tmp_path: Path) -> None:
    """The version check probes the index once per aggregate: appending to a cart with 2,000
    events costs the database about what appending to a new one does (counted in SQLite's
    virtual-machine steps, not in time)."""
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        long_history = [added("cart-long", 1) for _ in range(2_000)]
        store.append(AppendRequest("cart-long", "ShoppingCart", 0, long_history))
        store.append(AppendRequest("cart-short", "ShoppingCart", 0, [added("cart-short", 1)]))
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0  # go on

        with store.writer.connect() as connection:  # the writer's one pooled connection
            connection.connection.driver_connection.set_progress_handler(count, 1)

        def cost(cart: str, version: int) -> int:
            steps[0] = 0
            store.append(AppendRequest(cart, "ShoppingCart", version, [added(cart, 1)]))
            return steps[0]

        short, long = cost("cart-short", 1), cost("cart-long", 2_000)
        assert short > 0, "the step counter must see the writer's statements"
        assert long - short < 50, (short, long)  # reading 2,000 versions took 22,000 more
    finally:
        store.close()
