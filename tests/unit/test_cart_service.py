"""The application service over the in-memory store: load, decide, append, retry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import pytest

from microservice_connector.cart_service.application import (
    CartNotFound,
    CartService,
    RetriesExhausted,
)
from microservice_connector.cart_service.domain import CartClosed
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore import (
    AppendRequest,
    ConcurrencyError,
    EventStore,
    GroupCommitStore,
    InMemoryEventStore,
)

T = TypeVar("T")


@pytest.fixture
async def store() -> AsyncIterator[GroupCommitStore]:
    store = GroupCommitStore(InMemoryEventStore())
    yield store
    store.close()


async def test_commands_are_stored_as_events_with_a_shared_correlation_id(
    store: GroupCommitStore,
) -> None:
    service = CartService(store)
    await service.add_item("cart-123", "item-001", 2, correlation_id="req-1")
    cart = await service.remove_item("cart-123", "item-001", 1, correlation_id="req-2")
    assert (cart.version, cart.items) == (2, {"item-001": 1})
    events = await service.cart_events("cart-123")
    assert [e.event_type for e in events] == ["ItemAdded", "ItemRemoved"]
    assert [e.correlation_id for e in events] == ["req-1", "req-2"]


async def test_a_second_service_on_the_same_store_sees_the_first_ones_events(
    store: GroupCommitStore,
) -> None:
    first, second = CartService(store), CartService(store)
    await first.add_item("cart-1", "a", 1)
    await second.add_item("cart-1", "a", 1)  # second has no cache yet
    cart = await first.add_item("cart-1", "a", 1)  # first's cache is stale: retries
    assert (cart.version, cart.items) == (3, {"a": 3})
    assert (await second.get_cart("cart-1")).items == {"a": 3}


async def test_unknown_carts_are_not_found_except_for_adding(store: GroupCommitStore) -> None:
    service = CartService(store)
    with pytest.raises(CartNotFound):
        await service.get_cart("nope")
    with pytest.raises(CartNotFound):
        await service.remove_item("nope", "a")
    with pytest.raises(CartNotFound):
        await service.checkout("nope")
    with pytest.raises(CartNotFound):
        await service.cart_events("nope")
    assert await store.read_all() == []


async def test_time_travel_returns_the_cart_after_its_nth_event(store: GroupCommitStore) -> None:
    service = CartService(store)
    await service.add_item("c", "a", 1)
    await service.add_item("c", "b", 2)
    await service.checkout("c")
    assert (await service.get_cart("c", 1)).items == {"a": 1}
    assert (await service.get_cart("c", 3)).status == "checked_out"
    with pytest.raises(CartNotFound, match="no version 4"):
        await service.get_cart("c", 4)


async def test_a_rule_violation_writes_nothing(store: GroupCommitStore) -> None:
    service = CartService(store)
    await service.add_item("c", "a", 1)
    await service.checkout("c")
    with pytest.raises(CartClosed):
        await service.add_item("c", "a", 1)
    assert len(await store.load("c")) == 2


async def test_concurrent_commands_on_one_cart_all_apply(store: GroupCommitStore) -> None:
    service = CartService(store)
    await asyncio.gather(*(service.add_item("c", "a", 1) for _ in range(50)))
    cart = await service.get_cart("c")
    assert (cart.version, cart.items) == (50, {"a": 50})


class AlwaysConflicting:
    """A store whose every append loses the race."""

    def __init__(self) -> None:
        self.appends = 0

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        self.appends += 1
        raise ConcurrencyError(request.aggregate_id, request.expected_version, None)

    async def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        return []

    async def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        return []

    async def read(self, work: Callable[[EventStore], T]) -> T:
        return work(InMemoryEventStore())  # as empty as `load` says


async def test_retries_are_bounded() -> None:
    store = AlwaysConflicting()
    service = CartService(store, max_retries=3)
    with pytest.raises(RetriesExhausted, match="after 3 retries"):
        await service.add_item("c", "a", 1)
    assert store.appends == 4
