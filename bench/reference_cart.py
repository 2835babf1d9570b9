"""The reference cart of the `eventsourcing` library that the benches measure ours against."""

from __future__ import annotations

import uuid

from eventsourcing.domain import Aggregate, event


class Cart(Aggregate):
    """The reference cart: item quantities, evolved by its two events."""

    def __init__(self, id: uuid.UUID) -> None:  # the library's idiom for a given id
        self.items: dict[str, int] = {}

    @event("ItemAdded")
    def add_item(self, item_id: str, quantity: int) -> None:
        self.items[item_id] = self.items.get(item_id, 0) + quantity

    @event("ItemRemoved")
    def remove_item(self, item_id: str, quantity: int) -> None:
        left = self.items.get(item_id, 0) - quantity
        if left > 0:
            self.items[item_id] = left
        else:
            self.items.pop(item_id, None)
