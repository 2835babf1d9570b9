"""The JSON shapes of the cart API (DESIGN §3.4)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from fastapi import Response
from pydantic import BaseModel, ConfigDict, Field

from microservice_connector.cart_service.application import CartView
from microservice_connector.cart_service.domain import MAX_QUANTITY
from microservice_connector.events.codec import EventDecodeError
from microservice_connector.events.codecs import payload_builtins
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.tracing.context import trace_id_of
from microservice_connector.web.ids import IdField
from microservice_connector.web.numbers import INTEGRAL

Quantity = Annotated[int, Field(strict=True, ge=1, le=MAX_QUANTITY), INTEGRAL]


class AddItemBody(BaseModel):
    """`POST /carts/{cart_id}/items`."""

    model_config = ConfigDict(extra="forbid")

    item_id: IdField
    quantity: Quantity


class Cart(BaseModel):
    """A cart at one version."""

    cart_id: str
    version: int
    status: Literal["open", "checked_out"]
    items: dict[str, int]

    @classmethod
    def of(cls, view: CartView) -> Cart:
        """The API shape of an application view."""
        return cls(
            cart_id=view.cart_id,
            version=view.version,
            status="checked_out" if view.status == "checked_out" else "open",
            items=view.items,
        )


_encode = msgspec.json.Encoder().encode


def cart_response(view: CartView) -> Response:
    """A 200 answering `view` in the shape of `Cart`, encoded by msgspec directly: the view's
    fields already have the types `Cart` declares, so validating them again buys nothing."""
    body = {
        "cart_id": view.cart_id,
        "version": view.version,
        "status": "checked_out" if view.status == "checked_out" else "open",
        "items": view.items,
    }
    return Response(_encode(body), media_type="application/json")


class Event(BaseModel):
    """A stored event: its envelope and its decoded payload under `data`."""

    position: int
    event_id: str
    aggregate_id: str
    aggregate_type: str
    version: int
    event_type: str
    schema_version: int
    content_type: str
    correlation_id: str | None
    causation_id: str | None
    timestamp: datetime
    data: Any
    trace_id: str | None = None  # the OpenTelemetry trace of the command that stored it

    @classmethod
    def of(cls, event: RecordedEvent) -> Event:
        """The API shape of a recorded event."""
        return cls(
            position=event.position,
            event_id=event.event_id,
            aggregate_id=event.aggregate_id,
            aggregate_type=event.aggregate_type,
            version=event.version,
            event_type=event.event_type,
            schema_version=event.schema_version,
            content_type=event.content_type,
            correlation_id=event.correlation_id,
            causation_id=event.causation_id,
            timestamp=event.timestamp,
            data=_data(event),
            trace_id=trace_id_of(event.traceparent),
        )


def _data(event: RecordedEvent) -> Any:
    """The payload as JSON, whatever codec stored it; null if no codec can read it."""
    try:
        return payload_builtins(event)
    except EventDecodeError:
        return None


class CartEvents(BaseModel):
    """`GET /carts/{cart_id}/events`: oldest first."""

    cart_id: str
    events: list[Event]


class Feed(BaseModel):
    """`GET /events`: a page of the global feed; pass `next_after` as `after` for the next."""

    events: list[Event]
    next_after: int
