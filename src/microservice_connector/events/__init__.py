"""Event contracts shared by the services, their envelope and their codecs."""

from __future__ import annotations

from microservice_connector.events.cart import CART_EVENTS, CartCheckedOut, ItemAdded, ItemRemoved
from microservice_connector.events.codec import JSON_CONTENT_TYPE, EventDecodeError
from microservice_connector.events.envelope import NewEvent, RecordedEvent
from microservice_connector.events.registry import EventRegistry, default_registry

__all__ = [
    "CART_EVENTS",
    "JSON_CONTENT_TYPE",
    "CartCheckedOut",
    "EventDecodeError",
    "EventRegistry",
    "ItemAdded",
    "ItemRemoved",
    "NewEvent",
    "RecordedEvent",
    "default_registry",
]
