"""The snapshot store contract, told to memory, SQLite and PostgreSQL alike: one snapshot per
aggregate, never moved backwards within a shape, always replaced by another shape."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import (
    AppendRequest,
    InMemorySnapshotStore,
    Snapshot,
    SnapshotStore,
    SqlEventStore,
)
from microservice_connector.eventstore.sql_snapshots import SqlSnapshotStore

AT = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)


def snapshot(version: int, *, cart: str = "cart-1", schema: int = 1) -> Snapshot:
    state = f'{{"version": {version}}}'.encode()
    return Snapshot(cart, "ShoppingCart", version, state, schema, AT + timedelta(seconds=version))


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SnapshotStore]:
    if request.param == "memory":
        yield InMemorySnapshotStore()
        return
    url = (
        f"sqlite:///{tmp_path / 'events.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url")
    )
    events = SqlEventStore(url)
    try:
        yield events.snapshots
    finally:
        events.close()


def test_a_saved_snapshot_is_loaded_exactly_as_saved(store: SnapshotStore) -> None:
    assert store.load_snapshot("cart-1") is None
    store.save_snapshot(snapshot(100))
    assert store.load_snapshot("cart-1") == snapshot(100)
    assert store.load_snapshot("cart-2") is None


def test_a_later_snapshot_replaces_an_earlier_one_but_never_the_reverse(
    store: SnapshotStore,
) -> None:
    for version in (100, 300, 200):
        store.save_snapshot(snapshot(version))
    assert store.load_snapshot("cart-1") == snapshot(300)


def test_a_snapshot_in_another_shape_is_always_replaced(store: SnapshotStore) -> None:
    store.save_snapshot(snapshot(300, schema=1))
    store.save_snapshot(snapshot(200, schema=2))
    assert store.load_snapshot("cart-1") == snapshot(200, schema=2)


def test_snapshots_saved_together_keep_the_latest_of_each_aggregate_in_its_shape(
    store: SnapshotStore,
) -> None:
    store.save_snapshot(snapshot(500, cart="kept"))
    store.save_snapshot(snapshot(500, cart="reshaped"))

    store.save_snapshots(
        [
            snapshot(100),
            snapshot(300),
            snapshot(200),  # earlier than the one before it in the batch
            snapshot(400, cart="kept"),  # earlier than the one stored
            snapshot(40, cart="reshaped", schema=2),
        ]
    )

    assert store.load_snapshot("cart-1") == snapshot(300)
    assert store.load_snapshot("kept") == snapshot(500, cart="kept")
    assert store.load_snapshot("reshaped") == snapshot(40, cart="reshaped", schema=2)
    store.save_snapshots([])


def test_snapshots_are_kept_per_aggregate_and_can_all_be_deleted(store: SnapshotStore) -> None:
    for cart, version in itertools.product(["a", "b", "c"], [10, 20]):
        store.save_snapshot(snapshot(version, cart=cart))
    assert [store.load_snapshot(c).version for c in "abc"] == [20, 20, 20]  # type: ignore[union-attr]
    assert store.delete_snapshots() == 3
    assert all(store.load_snapshot(c) is None for c in "abc")


def test_the_sql_store_lists_every_aggregate_with_its_version(tmp_path: Path) -> None:
    events = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}", outbox_topic=None)
    try:
        for cart, count in [("b", 3), ("a", 2)]:
            added = [NewEvent("ItemAdded", ItemAdded(cart, "i", 1, AT), AT)] * count
            events.append(AppendRequest(cart, "ShoppingCart", 0, added))
        events.append(AppendRequest("inv", "Invoice", 0, added[:1]))
        snapshots: SqlSnapshotStore = events.snapshots
        assert snapshots.aggregates("ShoppingCart") == [("a", 2), ("b", 3)]
    finally:
        events.close()
