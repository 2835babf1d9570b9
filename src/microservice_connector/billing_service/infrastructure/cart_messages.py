"""Turns a `cart.events` message into a `CartEventIn`, or says exactly why it cannot."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import msgspec

from microservice_connector import tracing
from microservice_connector.billing_service.application import CartEventIn
from microservice_connector.events.cart import MAX_QUANTITY, CartEvent, ItemAdded, ItemRemoved
from microservice_connector.events.codec import EventDecodeError
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.events.ids import ID_DESCRIPTION, is_valid_id
from microservice_connector.events.numbers import plain_number
from microservice_connector.events.registry import EventRegistry
from microservice_connector.messaging.message import Message

REQUIRED_HEADERS = ("event-id", "event-type", "aggregate-id", "aggregate-version")
ID_HEADERS = ("event-id", "aggregate-id")
_SHOWN_CHARS = 80  # of a bad id in an error: enough to recognise it, never a flood


class PoisonMessage(ValueError):
    """A message that no retry can make valid: missing headers, unknown type, bad payload."""


def to_cart_event(message: Message, registry: EventRegistry, sequence: int = 0) -> CartEventIn:
    """The cart event carried by `message`; `PoisonMessage` names what is wrong."""
    headers = message.headers
    missing = [name for name in REQUIRED_HEADERS if not headers.get(name)]
    if missing:
        raise PoisonMessage(f"message {_shown(message.id)}: missing headers {', '.join(missing)}")
    for name in ID_HEADERS:
        if not is_valid_id(headers[name]):
            raise PoisonMessage(
                f"message {_shown(message.id)}: header {name} {_shown(headers[name])} is not an id "
                f"({ID_DESCRIPTION})"
            )
    version = _number(message, "aggregate-version")
    schema_version = _number(message, "schema-version", default=1)
    if version < 1:
        raise PoisonMessage(
            f"message {_shown(message.id)}: aggregate-version must be ≥ 1, got {version}"
        )
    recorded = RecordedEvent(
        position=sequence,
        event_id=headers["event-id"],
        aggregate_id=headers["aggregate-id"],
        aggregate_type=headers.get("aggregate-type", "ShoppingCart"),
        version=version,
        event_type=headers["event-type"],
        schema_version=schema_version,
        content_type=headers.get("content-type") or "application/json",
        event_data=message.payload,
        timestamp=datetime.now(UTC),
    )
    try:
        event = cast(CartEvent, registry.decode(recorded))
    except EventDecodeError as exc:
        raise PoisonMessage(str(exc)) from exc
    if getattr(event, "cart_id", recorded.aggregate_id) != recorded.aggregate_id:
        raise PoisonMessage(
            f"message {_shown(message.id)}: payload cart_id differs from aggregate-id header"
        )
    if problem := _impossible(event):
        raise PoisonMessage(f"message {_shown(message.id)}: {problem}")
    return CartEventIn(
        recorded.event_id, recorded.aggregate_id, version, event, tracing.trace_of(headers)
    )


def _number(message: Message, header: str, default: int | None = None) -> int:
    """The header's value as a number of plain digits (not `0_1`, ` 5`, `+5`); its default
    when absent; else `PoisonMessage` naming the header."""
    value = message.headers.get(header)
    if not value and default is not None:
        return default
    number = plain_number(value or "")
    if number is None:
        shown = _shown(value or "")
        raise PoisonMessage(f"message {_shown(message.id)}: header {header} {shown} is no number")
    return number


def stated_version(message: Message) -> int:
    """The version the message's `aggregate-version` header states, or 0 when it states none
    (absent, not a plain number, below 1): for recording a message that was refused."""
    number = plain_number(message.headers.get("aggregate-version", ""))
    return number if number is not None and number >= 1 else 0


def _impossible(event: CartEvent) -> str | None:
    """Why the cart service could never have stored `event`, or None: its rules for item ids
    and quantities hold on the bus too, so a forged or broken event is not billed."""
    if not isinstance(event, ItemAdded | ItemRemoved):
        return None
    if not is_valid_id(event.item_id):
        return f"item_id {_shown(event.item_id)} is not an id ({ID_DESCRIPTION})"
    if event.quantity < 1:
        return f"quantity must be at least 1, got {event.quantity}"
    if isinstance(event, ItemAdded) and event.quantity > MAX_QUANTITY:
        return f"an ItemAdded adds at most {MAX_QUANTITY}, got {event.quantity}"
    return None


def event_from_feed(item: Mapping[str, Any], registry: EventRegistry) -> CartEventIn:
    """The cart event of one `GET /events` feed entry (for `msc billing rebuild`)."""
    return to_cart_event(feed_message(item), registry, int(item["position"]))


FEED_FIELDS = frozenset(
    {"event_id", "event_type", "aggregate_id", "version", "schema_version", "data"}
)  # what `feed_message` reads of an entry


def feed_message(item: Mapping[str, Any]) -> Message:
    """One `GET /events` (or `GET /carts/{id}/events`) entry as the `cart.events` message
    the relay published for it; `KeyError` if a field is missing."""
    return Message(
        id=str(item["event_id"]),
        topic="cart.events",
        payload=msgspec.json.encode(item["data"]),
        headers={
            "event-id": str(item["event_id"]),
            "event-type": str(item["event_type"]),
            "aggregate-id": str(item["aggregate_id"]),
            "aggregate-version": str(item["version"]),
            "schema-version": str(item["schema_version"]),
            "content-type": "application/json",
        },
    )


def _shown(value: str) -> str:
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"
