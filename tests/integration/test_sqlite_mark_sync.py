"""On SQLite at FULL, the relay's marks commit without an fsync of their own (the next
append's fsync covers them), while appends keep theirs, and the writer's connection is back
at FULL after every mark, whether it committed or not."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore
from microservice_connector.eventstore import sqlite_statements as sqlite_sql

NOW = datetime(2026, 12, 5, tzinfo=UTC)
FULL, NORMAL = 2, 1


class Statements:
    """Every statement the store's one writer connection runs, and its sync level now."""

    def __init__(self, writer: Engine) -> None:
        self.seen: list[str] = []
        self._writer = writer
        with self._driver() as driver:
            driver.set_trace_callback(self.seen.append)

    def level(self) -> int:
        with self._driver() as driver:
            level: int = driver.execute("PRAGMA synchronous").fetchone()[0]
            return level

    def _driver(self) -> _Checkout:
        return _Checkout(self._writer)


class _Checkout:
    """The writer pool's one connection's driver, returned to the pool on exit."""

    def __init__(self, writer: Engine) -> None:
        self._raw = writer.raw_connection()

    def __enter__(self) -> sqlite3.Connection:
        driver = self._raw.driver_connection
        assert isinstance(driver, sqlite3.Connection)
        return driver

    def __exit__(self, *_: object) -> None:
        self._raw.close()


def store_at(tmp_path: Path, synchronous: str) -> SqlEventStore:
    return SqlEventStore(
        f"sqlite:///{tmp_path / 'events.db'}",
        outbox_topic="cart.events",
        sqlite_synchronous=synchronous,  # type: ignore[arg-type]
    )


@pytest.fixture
def full_store(tmp_path: Path) -> Iterator[SqlEventStore]:
    store = store_at(tmp_path, "FULL")
    yield store
    store.close()


def add_item(store: SqlEventStore, cart: str) -> None:
    event = NewEvent("ItemAdded", ItemAdded(cart, "item-001", 1, NOW), NOW)
    store.append(AppendRequest(cart, "ShoppingCart", 0, [event]))


def sync_level_at_commit(statements: list[str]) -> list[str]:
    """For each COMMIT in `statements`, the last `PRAGMA synchronous=…` set before it."""
    level, commits = "connection's own", []
    for statement in statements:
        if statement.startswith("PRAGMA synchronous="):
            level = statement.removeprefix("PRAGMA synchronous=")
        elif statement == "COMMIT":
            commits.append(level)
    return commits


def test_a_mark_commits_at_normal_and_the_next_append_at_full(
    full_store: SqlEventStore,
) -> None:
    statements = Statements(full_store.writer)
    add_item(full_store, "cart-1")
    [row] = full_store.outbox.pending()
    full_store.outbox.mark_published([row.id], [1])
    add_item(full_store, "cart-2")

    assert sync_level_at_commit(statements.seen) == ["connection's own", "NORMAL", "2"]
    assert statements.level() == FULL
    assert row.id not in {pending.id for pending in full_store.outbox.pending()}


def test_the_level_comes_back_when_the_unsynced_transaction_fails(
    full_store: SqlEventStore,
) -> None:
    statements = Statements(full_store.writer)
    with (
        pytest.raises(sqlite3.OperationalError),
        sqlite_sql.driver_transaction(full_store.writer, synced=False) as connection,
    ):
        sqlite_sql.cursor(connection).execute("UPDATE no_such_table SET x = 1")

    assert statements.level() == FULL
    assert "ROLLBACK" in statements.seen


def test_a_store_at_normal_keeps_its_level_and_sets_none(tmp_path: Path) -> None:
    store = store_at(tmp_path, "NORMAL")
    try:
        statements = Statements(store.writer)
        add_item(store, "cart-1")
        [row] = store.outbox.pending()
        store.outbox.mark_published([row.id], [1])

        assert not [s for s in statements.seen if s.startswith("PRAGMA synchronous=")]
        assert statements.level() == NORMAL
    finally:
        store.close()
