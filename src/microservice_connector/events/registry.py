"""Maps event types to payload classes by schema version, upcasts old payloads, decodes
stored events by their own content type."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from microservice_connector.events.billing import BILLING_EVENTS
from microservice_connector.events.cart import CART_EVENTS
from microservice_connector.events.codec import Codec, EventDecodeError
from microservice_connector.events.codecs import all_codecs
from microservice_connector.events.envelope import RecordedEvent

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
"""Turns a payload of schema version N, as JSON-shaped values, into one of version N + 1."""


class EventRegistry:
    """Knows every event class by name and schema version; decoding never guesses.

    The highest registered version of a type is its current one. Events stored at an older
    version are read through the upcasters registered for each step up, so readers only
    ever see current payloads.
    """

    def __init__(self, codecs: Iterable[Codec] | None = None) -> None:
        self._codecs = {codec.content_type: codec for codec in (codecs or all_codecs())}
        self._current: dict[str, tuple[int, type[msgspec.Struct]]] = {}
        self._names: dict[type[msgspec.Struct], tuple[str, int]] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}

    def register(
        self, cls: type[msgspec.Struct], *, name: str | None = None, version: int = 1
    ) -> None:
        """Register `cls` as event type `name` (its class name by default) at `version`."""
        event_type = name or cls.__name__
        self._names[cls] = (event_type, version)
        if version >= self._current.get(event_type, (0, cls))[0]:
            self._current[event_type] = (version, cls)

    def register_upcaster(self, event_type: str, from_version: int, upcaster: Upcaster) -> None:
        """Read `event_type` payloads of `from_version` as `from_version + 1` via `upcaster`."""
        self._upcasters[(event_type, from_version)] = upcaster

    def name_and_version(self, payload: msgspec.Struct) -> tuple[str, int]:
        """The event type and schema version a new event with this payload is stored under."""
        found = self._names.get(type(payload))
        if found is None:
            raise ValueError(f"{type(payload).__name__} is not a registered event class")
        return found

    def registered(self) -> list[tuple[str, int, type[msgspec.Struct]]]:
        """Every registered (event type, schema version, payload class), sorted by both."""
        return sorted(
            ((name, version, cls) for cls, (name, version) in self._names.items()),
            key=lambda entry: (entry[0], entry[1]),
        )

    def current_version(self, event_type: str) -> int | None:
        """The schema version readers decode `event_type` to, or None if it is unknown."""
        current = self._current.get(event_type)
        return None if current is None else current[0]

    def knows(self, event_type: str, schema_version: int = 1) -> bool:
        """Whether an event of this type and schema version can be decoded (upcast if old)."""
        current = self.current_version(event_type)
        if current is None or not 1 <= schema_version <= current:
            return False
        return all((event_type, v) in self._upcasters for v in range(schema_version, current))

    def decode(self, event: RecordedEvent) -> msgspec.Struct:
        """The payload of `event` as its current class, by the event's own content type and
        upcast from its schema version; `EventDecodeError` names the event if it cannot."""
        current = self._current.get(event.event_type)
        if current is None:
            raise EventDecodeError(
                f"event {event.event_id}: unknown event type "
                f"{event.event_type!r} at schema version {event.schema_version}"
            )
        version, cls = current
        codec = self._codecs.get(event.content_type)
        if codec is None:
            raise EventDecodeError(
                f"event {event.event_id}: unsupported content type {event.content_type!r}"
            )
        try:
            if event.schema_version == version:
                return codec.decode(event.event_type, event.event_data, cls)
            payload = self._upcast(event, codec, version)
            return msgspec.convert(payload, cls)
        except (EventDecodeError, msgspec.ValidationError) as exc:
            raise EventDecodeError(
                f"event {event.event_id}: malformed {event.event_type} "
                f"v{event.schema_version} payload: {exc}"
            ) from exc

    def _upcast(self, event: RecordedEvent, codec: Codec, version: int) -> dict[str, Any]:
        if not 1 <= event.schema_version < version:
            raise EventDecodeError(
                f"schema version {event.schema_version} is not one this reader knows (1..{version})"
            )
        payload = codec.to_builtins(event.event_type, event.event_data)
        for step in range(event.schema_version, version):
            upcaster = self._upcasters.get((event.event_type, step))
            if upcaster is None:
                raise EventDecodeError(f"no upcaster from schema version {step} to {step + 1}")
            try:
                payload = upcaster(payload)
            except Exception as exc:  # an old payload the upcaster cannot handle is malformed
                raise EventDecodeError(
                    f"upcasting from schema version {step} failed: {exc!r}"
                ) from exc
        return payload


def default_registry() -> EventRegistry:
    """A registry holding the cart's events at schema version 1, reading every codec."""
    registry = EventRegistry()
    for cls in CART_EVENTS:
        registry.register(cls)
    return registry


def billing_registry() -> EventRegistry:
    """A registry holding billing's own events (`billing.events`) at schema version 1,
    reading every codec."""
    registry = EventRegistry()
    for cls in BILLING_EVENTS:
        registry.register(cls)
    return registry
