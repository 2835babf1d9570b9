"""Payload codecs: turn an event struct into `event_data` bytes and back, one content type each."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import msgspec

JSON_CONTENT_TYPE = "application/json"

T = TypeVar("T")


class EventDecodeError(ValueError):
    """An event's payload could not be turned into its class; the message names the event."""


class EventEncodeError(ValueError):
    """A payload does not fit its codec's schema (a field the `.proto` lacks, a wrong type)."""


class Codec(Protocol):
    """Encodes payloads of one content type; decoding raises `EventDecodeError`, never guesses."""

    @property
    def content_type(self) -> str:
        """The MIME type stored with each event and sent as its `content-type` header."""
        ...

    def encode(self, event_type: str, payload: msgspec.Struct) -> bytes:
        """`payload` as `event_data` bytes; `EventEncodeError` if it does not fit."""
        ...

    def decode(self, event_type: str, data: bytes, cls: type[T]) -> T:
        """`data` as an instance of `cls`, strictly typed."""
        ...

    def to_builtins(self, event_type: str, data: bytes) -> dict[str, Any]:
        """`data` as JSON-shaped values (timestamps as RFC 3339 strings), as it was written."""
        ...


_encoder = msgspec.json.Encoder()


class JsonCodec:
    """Compact JSON with RFC 3339 UTC timestamps, via msgspec; the default codec."""

    content_type = JSON_CONTENT_TYPE

    def __init__(self) -> None:
        self._decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}

    def encode(self, event_type: str, payload: msgspec.Struct) -> bytes:
        """`payload` as JSON bytes."""
        return _encoder.encode(payload)

    def decode(self, event_type: str, data: bytes, cls: type[T]) -> T:
        """JSON `data` as `cls`; `EventDecodeError` says what does not fit."""
        decoder = self._decoders.get(cls)
        if decoder is None:
            decoder = self._decoders[cls] = msgspec.json.Decoder(cls)
        try:
            result: T = decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise EventDecodeError(str(exc)) from exc
        return result

    def to_builtins(self, event_type: str, data: bytes) -> dict[str, Any]:
        """JSON `data` as a dict; `EventDecodeError` unless it is a JSON object."""
        try:
            value = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise EventDecodeError(str(exc)) from exc
        if not isinstance(value, dict):
            raise EventDecodeError(f"expected a JSON object, got {type(value).__name__}")
        return value


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
