"""Payload codecs: turn an event struct into `event_data` bytes and back."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

JSON_CONTENT_TYPE = "application/json"

T = TypeVar("T")


class EventDecodeError(ValueError):
    """An event's payload could not be turned into its class; the message names the event."""


_encoder = msgspec.json.Encoder()


def encode_json(payload: msgspec.Struct) -> bytes:
    """Encode `payload` as compact JSON with RFC 3339 UTC timestamps."""
    return _encoder.encode(payload)


def decode_json(data: bytes, cls: type[T]) -> T:
    """Decode JSON `data` into `cls`, strictly typed; raises `msgspec.ValidationError`."""
    return msgspec.json.decode(data, type=cls)


def to_builtins(payload: msgspec.Struct) -> dict[str, Any]:
    """The payload as plain JSON-ready Python values."""
    result: dict[str, Any] = msgspec.to_builtins(payload)
    return result
