"""The cart's events: payload fields exactly as in the original design."""

from __future__ import annotations

from datetime import datetime

import msgspec

MAX_QUANTITY = 10_000  # of one ItemAdded: what one command may add


class ItemAdded(msgspec.Struct, frozen=True):
    """`quantity` of `item_id` went into cart `cart_id`."""

    cart_id: str
    item_id: str
    quantity: int
    timestamp: datetime


class ItemRemoved(msgspec.Struct, frozen=True):
    """`quantity` of `item_id` came out of cart `cart_id`."""

    cart_id: str
    item_id: str
    quantity: int
    timestamp: datetime


class CartCheckedOut(msgspec.Struct, frozen=True):
    """Cart `cart_id` was checked out; it accepts no further change."""

    cart_id: str
    timestamp: datetime


CartEvent = ItemAdded | ItemRemoved | CartCheckedOut

CART_EVENTS: tuple[type[CartEvent], ...] = (ItemAdded, ItemRemoved, CartCheckedOut)
