"""Maps `(event_type, schema_version)` to a payload class and decodes stored events."""

from __future__ import annotations

import msgspec

from microservice_connector.events.cart import CART_EVENTS
from microservice_connector.events.codec import JSON_CONTENT_TYPE, EventDecodeError, decode_json
from microservice_connector.events.envelope import RecordedEvent


class EventRegistry:
    """Knows every event class by name and schema version; decoding never guesses."""

    def __init__(self) -> None:
        self._classes: dict[tuple[str, int], type[msgspec.Struct]] = {}

    def register(
        self, cls: type[msgspec.Struct], *, name: str | None = None, version: int = 1
    ) -> None:
        """Register `cls` as event type `name` (its class name by default) at `version`."""
        self._classes[(name or cls.__name__, version)] = cls

    def knows(self, event_type: str, schema_version: int = 1) -> bool:
        """Whether an event of this type and schema version can be decoded."""
        return (event_type, schema_version) in self._classes

    def decode(self, event: RecordedEvent) -> msgspec.Struct:
        """The payload of `event` as its class; `EventDecodeError` names the event if it cannot."""
        cls = self._classes.get((event.event_type, event.schema_version))
        if cls is None:
            raise EventDecodeError(
                f"event {event.event_id}: unknown event type "
                f"{event.event_type!r} at schema version {event.schema_version}"
            )
        if event.content_type != JSON_CONTENT_TYPE:
            raise EventDecodeError(
                f"event {event.event_id}: unsupported content type {event.content_type!r}"
            )
        try:
            return decode_json(event.event_data, cls)
        except msgspec.DecodeError as exc:
            raise EventDecodeError(
                f"event {event.event_id}: malformed {event.event_type} payload: {exc}"
            ) from exc


def default_registry() -> EventRegistry:
    """A registry holding the cart's events at schema version 1."""
    registry = EventRegistry()
    for cls in CART_EVENTS:
        registry.register(cls)
    return registry
