"""The Protobuf codec: payload structs to and from the generated messages of `events/proto`."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC
from typing import Any, TypeVar, cast

import msgspec
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from microservice_connector.events.codec import EventDecodeError, EventEncodeError
from microservice_connector.events.proto import billing_pb2, cart_pb2

PROTOBUF_CONTENT_TYPE = "application/x-protobuf"
_TIMESTAMP = "google.protobuf.Timestamp"

T = TypeVar("T")


class ProtobufCodec:
    """Encodes each event type with the message of the same name; field names match the
    JSON payload's, so a payload struct maps onto its message field by field."""

    content_type = PROTOBUF_CONTENT_TYPE

    def __init__(self, messages: Mapping[str, type[Message]]) -> None:
        self._messages = dict(messages)

    def encode(self, event_type: str, payload: msgspec.Struct) -> bytes:
        """`payload` as its message's wire bytes (deterministic: maps in key order)."""
        message = self._message(event_type, EventEncodeError)()
        try:
            _fill(message, payload)
        except (TypeError, ValueError) as exc:
            raise EventEncodeError(f"{event_type}: {exc}") from exc
        return message.SerializeToString(deterministic=True)

    def decode(self, event_type: str, data: bytes, cls: type[T]) -> T:
        """The wire bytes of `event_type` as `cls`; `EventDecodeError` if they do not fit."""
        try:
            return msgspec.convert(self._parse(event_type, data), cls)
        except msgspec.ValidationError as exc:
            raise EventDecodeError(str(exc)) from exc

    def to_builtins(self, event_type: str, data: bytes) -> dict[str, Any]:
        """The wire bytes as JSON-shaped values: every field of the message (proto3 sends no
        zero values, so those read as zero), timestamps as RFC 3339 strings."""
        builtins: dict[str, Any] = msgspec.to_builtins(self._parse(event_type, data))
        return builtins

    def _parse(self, event_type: str, data: bytes) -> dict[str, Any]:
        message = self._message(event_type, EventDecodeError)()
        try:
            message.ParseFromString(data)
        except DecodeError as exc:
            raise EventDecodeError(f"not a {event_type} message: {exc}") from exc
        return _to_dict(message)

    def _message(self, event_type: str, error: type[ValueError]) -> type[Message]:
        cls = self._messages.get(event_type)
        if cls is None:
            raise error(f"no Protobuf message for event type {event_type!r}")
        return cls


def default_protobuf_codec() -> ProtobufCodec:
    """The codec for every event of DESIGN §3.1, from the committed generated code."""
    return ProtobufCodec(
        {
            "ItemAdded": cart_pb2.ItemAdded,
            "ItemRemoved": cart_pb2.ItemRemoved,
            "CartCheckedOut": cart_pb2.CartCheckedOut,
            "InvoiceIssued": billing_pb2.InvoiceIssued,
            "PriceChanged": billing_pb2.PriceChanged,
        }
    )


def _fill(message: Message, value: Any) -> None:
    fields = message.DESCRIPTOR.fields_by_name
    items = (
        value.items()
        if isinstance(value, Mapping)
        else ((name, getattr(value, name)) for name in value.__struct_fields__)
    )
    message.SetInParent()
    for name, item in items:
        field = fields.get(name)
        if field is None:
            raise ValueError(f"message {message.DESCRIPTOR.full_name} has no field {name!r}")
        if item is not None:
            _set(message, cast(FieldDescriptor, field), item)


def _set(message: Message, field: FieldDescriptor, item: Any) -> None:
    kind = field.message_type
    if kind is None:
        if field.is_repeated:
            getattr(message, field.name).extend(item)
        else:
            setattr(message, field.name, item)
    elif kind.GetOptions().map_entry:
        target = getattr(message, field.name)
        nested = kind.fields_by_name["value"].message_type is not None
        for key, value in item.items():
            if nested:
                _fill(target[key], value)
            else:
                target[key] = value
    elif kind.full_name == _TIMESTAMP:
        getattr(message, field.name).FromDatetime(item)
    elif field.is_repeated:
        container = getattr(message, field.name)
        for value in item:
            _fill(container.add(), value)
    else:
        _fill(getattr(message, field.name), item)


def _to_dict(message: Message) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for field in message.DESCRIPTOR.fields:
        value = getattr(message, field.name)
        kind = field.message_type
        if kind is None:
            result[field.name] = list(value) if field.is_repeated else value
        elif kind.GetOptions().map_entry:
            nested = kind.fields_by_name["value"].message_type is not None
            result[field.name] = {k: _to_dict(v) if nested else v for k, v in value.items()}
        elif field.is_repeated:
            result[field.name] = [_to_dict(v) for v in value]
        elif not message.HasField(field.name):
            continue  # absent: the struct's default applies, or decoding says it is missing
        elif kind.full_name == _TIMESTAMP:
            result[field.name] = value.ToDatetime(tzinfo=UTC)
        else:
            result[field.name] = _to_dict(value)
    return result
