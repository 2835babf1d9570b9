"""A schema change to tell stories with: `ItemAdded` v2 gains a `unit`, and v1 payloads are
upcast to it (items added before units existed were counted in pieces)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import msgspec

from microservice_connector.events import EventRegistry, ItemAdded, RecordedEvent, default_registry
from microservice_connector.events.codecs import Serializer, codec_named
from microservice_connector.eventstore.outbox_rows import message_headers
from microservice_connector.messaging.message import Message


class ItemAddedV2(ItemAdded, frozen=True):
    """`ItemAdded` at schema version 2: `quantity` counts `unit`s."""

    unit: str = "piece"


def add_unit(payload: dict[str, Any]) -> dict[str, Any]:
    """Upcaster v1 → v2."""
    return {**payload, "unit": "piece"}


def v2_registry() -> EventRegistry:
    """The default registry after the change: v2 is current, v1 is upcast."""
    registry = default_registry()
    registry.register(ItemAddedV2, name="ItemAdded", version=2)
    registry.register_upcaster("ItemAdded", 1, add_unit)
    return registry


def recorded(
    payload: msgspec.Struct,
    version: int,
    *,
    serializer: Serializer = "json",
    schema_version: int = 1,
) -> RecordedEvent:
    """`payload` as the `version`-th event of its cart, encoded by `serializer`."""
    codec = codec_named(serializer)
    event_type = "ItemAdded" if isinstance(payload, ItemAdded) else type(payload).__name__
    cart_id: str = payload.cart_id  # type: ignore[attr-defined]
    return RecordedEvent(
        position=0,
        event_id=str(uuid.uuid4()),
        aggregate_id=cart_id,
        aggregate_type="ShoppingCart",
        version=version,
        event_type=event_type,
        schema_version=schema_version,
        content_type=codec.content_type,
        event_data=codec.encode(event_type, payload),
        timestamp=datetime.now(UTC),
    )


def as_message(event: RecordedEvent) -> Message:
    """The `cart.events` message the outbox relay would publish for `event`."""
    return Message(
        id=event.event_id,
        topic="cart.events",
        payload=event.event_data,
        headers=message_headers(event),
        key=event.aggregate_id,
    )
