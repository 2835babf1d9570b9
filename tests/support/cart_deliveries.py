"""Cart events as billing's consumer receives them, for tests that call its handler directly."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from microservice_connector.events.cart import ItemAdded
from microservice_connector.messaging.message import Delivery, Message

ADDED_AT = datetime(2026, 11, 25, tzinfo=UTC)


def item_added(cart: str, version: int, quantity: int = 1) -> Delivery:
    """A first delivery of `ItemAdded` (`quantity` of item-001), version `version` of `cart`
    at stream sequence `version`, as the relay publishes it; settling it does nothing."""
    payload = ItemAdded(cart, "item-001", quantity, ADDED_AT)
    message = Message(
        id=f"{cart}-{version}",
        topic="cart.events",
        payload=msgspec.json.encode(payload),
        headers={
            "event-id": f"{cart}-{version}",
            "event-type": "ItemAdded",
            "aggregate-id": cart,
            "aggregate-version": str(version),
        },
    )

    async def settle(*_: object) -> None:
        return None

    return Delivery(message, 1, version, settle, settle)
