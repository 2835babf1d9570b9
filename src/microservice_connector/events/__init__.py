"""Event contracts shared by the services, their envelope and their codecs."""

from __future__ import annotations

from microservice_connector.events.cart import CART_EVENTS, CartCheckedOut, ItemAdded, ItemRemoved
from microservice_connector.events.codec import (
    JSON_CONTENT_TYPE,
    Codec,
    EventDecodeError,
    EventEncodeError,
    JsonCodec,
)
from microservice_connector.events.codecs import Serializer, codec_named, payload_builtins
from microservice_connector.events.envelope import NewEvent, RecordedEvent
from microservice_connector.events.protobuf_codec import PROTOBUF_CONTENT_TYPE, ProtobufCodec
from microservice_connector.events.registry import EventRegistry, Upcaster, default_registry

__all__ = [
    "CART_EVENTS",
    "JSON_CONTENT_TYPE",
    "PROTOBUF_CONTENT_TYPE",
    "CartCheckedOut",
    "Codec",
    "EventDecodeError",
    "EventEncodeError",
    "EventRegistry",
    "ItemAdded",
    "ItemRemoved",
    "JsonCodec",
    "NewEvent",
    "ProtobufCodec",
    "RecordedEvent",
    "Serializer",
    "Upcaster",
    "codec_named",
    "default_registry",
    "payload_builtins",
]
