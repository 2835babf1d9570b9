"""The codecs this system speaks, by content type (for readers) and by name (for writers)."""

from __future__ import annotations

from typing import Any, Literal

from microservice_connector.events.codec import (
    JSON_CONTENT_TYPE,
    Codec,
    EventDecodeError,
    JsonCodec,
)
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.events.protobuf_codec import (
    PROTOBUF_CONTENT_TYPE,
    default_protobuf_codec,
)

Serializer = Literal["json", "protobuf"]

_CODECS: dict[str, Codec] = {
    JSON_CONTENT_TYPE: JsonCodec(),
    PROTOBUF_CONTENT_TYPE: default_protobuf_codec(),
}
_NAMES: dict[Serializer, str] = {"json": JSON_CONTENT_TYPE, "protobuf": PROTOBUF_CONTENT_TYPE}


def codec_named(name: Serializer) -> Codec:
    """The codec `MSC_SERIALIZER=name` picks for new events."""
    return _CODECS[_NAMES[name]]


def all_codecs() -> list[Codec]:
    """Every codec, so that a reader decodes any event by its own content type."""
    return list(_CODECS.values())


def codec_for(content_type: str) -> Codec:
    """The codec of `content_type`; `EventDecodeError` if there is none."""
    codec = _CODECS.get(content_type)
    if codec is None:
        raise EventDecodeError(f"unsupported content type {content_type!r}")
    return codec


def payload_builtins(event: RecordedEvent) -> dict[str, Any]:
    """`event`'s payload as JSON-shaped values, whatever its codec, exactly as it was written
    (its own schema version, not upcast); `EventDecodeError` if it cannot be read."""
    return codec_for(event.content_type).to_builtins(event.event_type, event.event_data)
