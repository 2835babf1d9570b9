"""Cart snapshots in a real database, SQLite then PostgreSQL: a snapshot row written before the
codec moved to infrastructure still loads, and the rows written now hold the same bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from microservice_connector.cart_service.application import CartService
from microservice_connector.cart_service.infrastructure.snapshot_codec import JsonCartStateCodec
from microservice_connector.eventstore import GroupCommitStore, Snapshot, SqlEventStore

CART = "cart-1"
AT = datetime(2026, 12, 1, tzinfo=UTC)
# The state column as `snapshot_of` wrote it at commit 50daad6 (msgspec in the application).
# Its items differ from the cart's events, so a cart that shows them was loaded from it.
OLD_STATE = b'{"status":"open","items":{"from-snapshot":3}}'


def test_a_snapshot_row_of_the_old_code_loads(sql_event_store: SqlEventStore) -> None:
    async def story(store: GroupCommitStore) -> None:
        writer = CartService(store)
        for _ in range(3):
            await writer.add_item(CART, "a", 1)
        sql_event_store.snapshots.save_snapshot(Snapshot(CART, "ShoppingCart", 3, OLD_STATE, 1, AT))
        service = CartService(
            store,
            snapshots=sql_event_store.snapshots,
            snapshot_codec=JsonCartStateCodec(),
            cache_size=0,
        )
        assert (await service.get_cart(CART)).items == {"from-snapshot": 3}
        after = await service.add_item(CART, "b", 1)  # the snapshot plus the tail decides
        assert (after.version, after.items) == (4, {"from-snapshot": 3, "b": 1})

    run(story, sql_event_store)


def test_a_snapshot_row_written_now_holds_the_old_bytes(sql_event_store: SqlEventStore) -> None:
    async def story(store: GroupCommitStore) -> None:
        service = CartService(
            store,
            snapshots=sql_event_store.snapshots,
            snapshot_codec=JsonCartStateCodec(),
            snapshot_every=3,
        )
        await service.add_item(CART, "item-2", 2)
        await service.add_item(CART, "item-1", 5)
        await service.checkout(CART)  # version 3: the snapshot is saved before it answers
        stored = sql_event_store.snapshots.load_snapshot(CART)
        assert stored is not None
        assert (stored.version, stored.schema_version) == (3, 1)
        assert stored.state == b'{"status":"checked_out","items":{"item-2":2,"item-1":5}}'

    run(story, sql_event_store)


def run(
    story: Callable[[GroupCommitStore], Coroutine[Any, Any, None]], sql_event_store: SqlEventStore
) -> None:
    store = GroupCommitStore(sql_event_store)  # closing it closes `sql_event_store` too
    try:
        asyncio.run(story(store))
    finally:
        store.close()
