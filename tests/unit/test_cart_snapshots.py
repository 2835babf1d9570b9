"""Cart snapshots: loading from the latest snapshot plus the events after it gives exactly
what a full replay gives, whatever the history and the interval; a stale or broken snapshot
is ignored and replaced; a failing snapshot store never fails a command."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from microservice_connector.cart_service.application import CartNotFound, CartService, CartView
from microservice_connector.cart_service.application.cart_snapshots import (
    SNAPSHOT_SCHEMA_VERSION,
)
from microservice_connector.cart_service.domain import CartRuleViolation, InvalidCommand
from microservice_connector.cart_service.infrastructure.snapshot_codec import JsonCartStateCodec
from microservice_connector.eventstore import (
    GroupCommitStore,
    InMemoryEventStore,
    InMemorySnapshotStore,
    Snapshot,
)

CART = "cart-1"
AT = datetime(2024, 5, 1, tzinfo=UTC)
CODEC = JsonCartStateCodec()

add = st.tuples(st.just("add"), st.sampled_from("abc"), st.integers(1, 5))
remove = st.tuples(st.just("remove"), st.sampled_from("abc"), st.none() | st.integers(1, 6))
checkout = st.tuples(st.just("checkout"), st.none(), st.none())
# Mostly adds, so histories grow long; a checkout (which ends a cart) only now and then.
commands = st.lists(
    st.tuples(st.one_of(add, add, add, remove, checkout), st.booleans()), max_size=80
)
intervals = st.integers(1, 12)


async def run(service: CartService, kind: str, item: str | None, qty: int | None) -> CartView:
    if kind == "add":
        assert item is not None
        assert qty is not None
        return await service.add_item(CART, item, qty)
    if kind == "remove":
        assert item is not None
        return await service.remove_item(CART, item, qty)
    return await service.checkout(CART)


async def _story(
    history: list[tuple[tuple[str, str | None, int | None], bool]], every: int, reader_every: int
) -> None:
    events, snapshots = InMemoryEventStore(), InMemorySnapshotStore()
    store = GroupCommitStore(events)
    try:
        # Two writers take turns: one trusts its cache, the other loads the cart for every
        # command (snapshot plus tail), so a wrong load would show as a wrong decision.
        cached = CartService(store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=every)
        loading = CartService(
            store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=every, cache_size=0
        )
        replaying = CartService(store, cache_size=0)  # no snapshots: the full replay
        for (kind, item, qty), by_cache in history:
            try:
                view = await run(cached if by_cache else loading, kind, item, qty)
            except (CartRuleViolation, CartNotFound, InvalidCommand):
                continue
            assert view == await replaying.get_cart(CART, view.version)
        version = len(events.load(CART))
        if version == 0:
            return
        snapshot = snapshots.load_snapshot(CART)
        if version >= every:  # taken each time the cart crossed a multiple of `every`
            assert snapshot is not None
            assert snapshot.version == version // every * every
        else:
            assert snapshot is None
        # A reader configured with another interval uses the same snapshot.
        reader = CartService(
            store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=reader_every
        )
        assert await reader.get_cart(CART) == await replaying.get_cart(CART)
        for n in range(1, version + 1):
            assert await reader.get_cart(CART, n) == await replaying.get_cart(CART, n)
    finally:
        store.close()


@settings(max_examples=120, deadline=None)
@given(history=commands, every=intervals, reader_every=intervals)
def test_snapshot_plus_tail_equals_full_replay(
    history: list[tuple[tuple[str, str | None, int | None], bool]], every: int, reader_every: int
) -> None:
    asyncio.run(_story(history, every, reader_every))


def within_a_store(
    work: Callable[[GroupCommitStore, InMemorySnapshotStore], Awaitable[None]],
) -> None:
    store = GroupCommitStore(InMemoryEventStore())
    try:
        asyncio.run(work(store, InMemorySnapshotStore()))
    finally:
        store.close()


@pytest.mark.parametrize(
    ("schema_version", "state"),
    [
        (SNAPSHOT_SCHEMA_VERSION + 1, b'{"status": "open", "items": {"a": 99}}'),  # other shape
        (SNAPSHOT_SCHEMA_VERSION, b"\x00 not a cart"),  # unreadable
    ],
)
def test_a_stale_snapshot_is_ignored_and_replaced_on_the_next_write(
    schema_version: int, state: bytes
) -> None:
    async def story(store: GroupCommitStore, snapshots: InMemorySnapshotStore) -> None:
        writer = CartService(store, snapshot_every=100)
        for _ in range(3):
            await writer.add_item(CART, "a", 1)
        snapshots.save_snapshot(Snapshot(CART, "ShoppingCart", 3, state, schema_version, AT))

        service = CartService(store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=100)
        assert (await service.get_cart(CART)).items == {"a": 3}  # replayed, snapshot ignored
        assert snapshots.load_snapshot(CART).schema_version == schema_version  # type: ignore[union-attr]
        await service.add_item(CART, "b", 1)  # far from 100 events, yet it is replaced
        replaced = snapshots.load_snapshot(CART)
        assert replaced is not None
        assert (replaced.version, replaced.schema_version) == (4, SNAPSHOT_SCHEMA_VERSION)
        fresh = CartService(store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=100)
        assert (await fresh.get_cart(CART)).items == {"a": 3, "b": 1}

    within_a_store(story)


def test_a_long_history_without_a_snapshot_gets_one_on_its_next_write() -> None:
    async def story(store: GroupCommitStore, snapshots: InMemorySnapshotStore) -> None:
        before = CartService(store)  # snapshots were off
        for _ in range(12):
            await before.add_item(CART, "a", 1)
        after = CartService(store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=5)
        await after.add_item(CART, "a", 1)  # version 13: no multiple of 5 crossed, still due
        assert snapshots.load_snapshot(CART).version == 13  # type: ignore[union-attr]

    within_a_store(story)


class BrokenSnapshotStore:
    """A snapshot store whose database is gone."""

    def load_snapshot(self, aggregate_id: str) -> Snapshot | None:
        raise ConnectionError("snapshots unreachable")

    def save_snapshot(self, snapshot: Snapshot) -> None:
        raise ConnectionError("snapshots unreachable")

    def save_snapshots(self, taken: Sequence[Snapshot]) -> None:
        raise ConnectionError("snapshots unreachable")

    def delete_snapshots(self) -> int:
        raise ConnectionError("snapshots unreachable")


def test_a_failing_snapshot_store_never_fails_a_command(caplog: pytest.LogCaptureFixture) -> None:
    async def story(store: GroupCommitStore, _: InMemorySnapshotStore) -> None:
        service = CartService(
            store,
            snapshots=BrokenSnapshotStore(),
            snapshot_codec=CODEC,
            snapshot_every=2,
            cache_size=0,
        )
        for n in range(1, 6):
            assert (await service.add_item(CART, "a", 1)).items == {"a": n}
        assert (await service.get_cart(CART, 4)).items == {"a": 4}

    with caplog.at_level(logging.WARNING):
        within_a_store(story)
    assert "cannot save its snapshot" in caplog.text
    assert "cannot load its snapshot" in caplog.text


@pytest.mark.parametrize("working", [True, False])
def test_snapshots_saved_by_the_group_commit_writer_never_fail_a_command(
    working: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """As the cart service saves them: by its event store's writer, after a commit."""
    snapshots = InMemorySnapshotStore()
    writer = snapshots if working else BrokenSnapshotStore()
    store = GroupCommitStore(InMemoryEventStore(), snapshots=writer)

    async def story() -> None:
        service = CartService(
            store,
            snapshots=snapshots,
            snapshot_codec=CODEC,
            snapshot_every=5,
            save_snapshot=store.save_snapshot,
        )
        for n in range(1, 8):
            assert (await service.add_item(CART, "a", 1)).items == {"a": n}
        fresh = CartService(store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=5)
        assert (await fresh.get_cart(CART)).items == {"a": 7}

    try:
        with caplog.at_level(logging.WARNING):
            asyncio.run(story())
    finally:
        store.close()
    saved = snapshots.load_snapshot(CART)
    if working:
        assert saved is not None
        assert saved.version == 5
    else:
        assert saved is None
        assert "cannot save its snapshot" in caplog.text


def test_snapshot_every_zero_takes_none() -> None:
    async def story(store: GroupCommitStore, snapshots: InMemorySnapshotStore) -> None:
        service = CartService(store, snapshots=snapshots, snapshot_codec=CODEC, snapshot_every=0)
        for _ in range(10):
            await service.add_item(CART, "a", 1)
        assert snapshots.load_snapshot(CART) is None

    within_a_store(story)


def test_a_snapshot_store_without_a_codec_is_refused() -> None:
    store = GroupCommitStore(InMemoryEventStore())
    try:
        with pytest.raises(ValueError, match="needs a codec"):
            CartService(store, snapshots=InMemorySnapshotStore())
    finally:
        store.close()
