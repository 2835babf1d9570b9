"""The `ShoppingCart` aggregate: decides on commands, evolves by applying its events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Literal

from microservice_connector.cart_service.domain.errors import (
    CartClosed,
    EmptyCart,
    InvalidCommand,
    NotEnoughItems,
)
from microservice_connector.events.cart import (
    MAX_QUANTITY,
    CartCheckedOut,
    CartEvent,
    ItemAdded,
    ItemRemoved,
)

CartStatus = Literal["open", "checked_out"]


class ShoppingCart:
    """A cart rebuilt from its events. Deciding never changes it; only `apply` does."""

    __slots__ = ("cart_id", "items", "status", "version")

    def __init__(self, cart_id: str) -> None:
        self.cart_id = cart_id
        self.version = 0
        self.status: CartStatus = "open"
        self.items: dict[str, int] = {}

    @classmethod
    def replay(cls, cart_id: str, events: Iterable[CartEvent]) -> ShoppingCart:
        """The cart after applying `events` in order to an empty one."""
        cart = cls(cart_id)
        for event in events:
            cart.apply(event)
        return cart

    @classmethod
    def from_state(
        cls, cart_id: str, version: int, status: CartStatus, items: dict[str, int]
    ) -> ShoppingCart:
        """The cart as it was after its `version`-th event, e.g. restored from a snapshot."""
        cart = cls(cart_id)
        cart.version, cart.status, cart.items = version, status, dict(items)
        return cart

    def copy(self) -> ShoppingCart:
        """An independent cart with the same state."""
        twin = ShoppingCart(self.cart_id)
        twin.version, twin.status, twin.items = self.version, self.status, dict(self.items)
        return twin

    @property
    def exists(self) -> bool:
        """Whether any event has happened to this cart."""
        return self.version > 0

    # Decisions: each returns the events the command causes, or raises why it cannot.

    def add_item(self, item_id: str, quantity: int, now: datetime) -> list[CartEvent]:
        """Add `quantity` (1..10000) of `item_id` to an open cart."""
        _check_quantity(quantity)
        self._check_open()
        return [ItemAdded(self.cart_id, item_id, quantity, now)]

    def remove_item(self, item_id: str, quantity: int | None, now: datetime) -> list[CartEvent]:
        """Remove `quantity` of `item_id`, or all of it when `quantity` is None."""
        if quantity is not None:
            _check_quantity(quantity)
        self._check_open()
        held = self.items.get(item_id, 0)
        if held == 0:
            raise NotEnoughItems(f"cart {self.cart_id} holds no {item_id}")
        if quantity is None:
            quantity = held
        if quantity > held:
            raise NotEnoughItems(
                f"cart {self.cart_id} holds {held} of {item_id}; cannot remove {quantity}"
            )
        return [ItemRemoved(self.cart_id, item_id, quantity, now)]

    def checkout(self, now: datetime) -> list[CartEvent]:
        """Check out an open cart that holds at least one item."""
        self._check_open()
        if not self.items:
            raise EmptyCart(f"cart {self.cart_id} is empty; nothing to check out")
        return [CartCheckedOut(self.cart_id, now)]

    def _check_open(self) -> None:
        if self.status == "checked_out":
            raise CartClosed(f"cart {self.cart_id} is checked out and accepts no changes")

    # Evolution: the only place state changes.

    def apply(self, event: CartEvent) -> None:
        """Fold one event into the state and advance the version by one."""
        match event:
            case ItemAdded(item_id=item_id, quantity=quantity):
                self.items[item_id] = self.items.get(item_id, 0) + quantity
            case ItemRemoved(item_id=item_id, quantity=quantity):
                left = self.items.get(item_id, 0) - quantity
                if left > 0:
                    self.items[item_id] = left
                else:
                    self.items.pop(item_id, None)
            case CartCheckedOut():
                self.status = "checked_out"
        self.version += 1


def _check_quantity(quantity: int) -> None:
    if not 1 <= quantity <= MAX_QUANTITY:
        raise InvalidCommand(f"quantity must be 1..{MAX_QUANTITY}, got {quantity}")
