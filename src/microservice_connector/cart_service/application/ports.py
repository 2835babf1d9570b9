"""What the application needs from the outside world, as small protocols."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from microservice_connector.cart_service.domain.shopping_cart import CartStatus
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.port import AppendRequest, EventStore

T = TypeVar("T")


class AsyncEventStore(Protocol):
    """An event store the application awaits; see `GroupCommitStore`."""

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Append atomically or raise `ConcurrencyError`."""
        ...

    async def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events in the version range, oldest first."""
        ...

    async def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """The global feed after `after_position`."""
        ...

    async def read(self, work: Callable[[EventStore], T]) -> T:
        """`work(store)` against the synchronous store on a worker thread: several reads
        (and what is computed from them) for one hand-off."""
        ...


@dataclass(frozen=True, slots=True)
class CartState:
    """What a cart snapshot holds besides its id and version: the cart's status and items."""

    status: CartStatus
    items: dict[str, int]


class UnreadableCartState(ValueError):
    """Stored bytes that are not a cart state in the shape the codec reads."""


class CartStateCodec(Protocol):
    """Turns a cart's state into the bytes of a snapshot and back; `decode(encode(s)) == s`."""

    def encode(self, state: CartState) -> bytes:
        """The bytes to store for `state`; the same state always gives the same bytes."""
        ...

    def decode(self, data: bytes) -> CartState:
        """The state `data` holds; raises `UnreadableCartState` if it holds none."""
        ...
