"""The cart service's HTTP API (DESIGN §3.4), built around an already-wired `CartService`."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Response
from fastapi.telemetry import TelemetryConfig

from microservice_connector.cart_service.application import (
    CartNotFound,
    CartService,
    RetriesExhausted,
)
from microservice_connector.cart_service.domain import (
    MAX_QUANTITY,
    CartRuleViolation,
    InvalidCommand,
)
from microservice_connector.cart_service.infrastructure.fast_commands import (
    CommandRoute,
    install_command_lanes,
)
from microservice_connector.cart_service.infrastructure.schemas import (
    AddItemBody,
    Cart,
    CartEvents,
    Event,
    Feed,
    cart_response,
)
from microservice_connector.events.new_ids import new_id
from microservice_connector.web.errors import ERROR_RESPONSES, install_error_handlers
from microservice_connector.web.health import Check, health_router
from microservice_connector.web.ids import ID_PATTERN, id_path
from microservice_connector.web.numbers import MAX_SQL_INT
from microservice_connector.web.server import lifespan

CartId = Annotated[str, id_path("the cart's id")]
ItemId = Annotated[str, id_path("the item's id")]
Endpoint = Callable[..., Awaitable[Any]]
# FastAPI's OpenTelemetry bridge asks for the global providers on every request (about 8 µs,
# a tenth of the HTTP layer of a command here); the service configures none, so it is off.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
CorrelationId = Annotated[
    str | None,
    Header(alias="X-Correlation-ID", pattern=ID_PATTERN, description="ties events to a request"),
]


def create_app(
    service: CartService,
    *,
    checks: Mapping[str, Check],
    on_startup: Callable[[], Awaitable[None]] | None = None,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> FastAPI:
    """The cart API. `on_shutdown` runs after the server stops taking requests."""

    app = FastAPI(
        title="Cart service",
        version="1",
        lifespan=lifespan(on_startup, on_shutdown),
        responses=ERROR_RESPONSES,
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(
        app,
        {
            CartNotFound: 404,
            CartRuleViolation: 409,
            RetriesExhausted: 409,
            InvalidCommand: 422,
        },
    )
    app.include_router(health_router(checks))

    def command(method: str, path: str) -> Callable[[Endpoint], Endpoint]:
        """Register a command endpoint as a `CommandRoute` (FastAPI's route plus a lane that
        skips its plumbing for plainly valid requests)."""

        def register(endpoint: Endpoint) -> Endpoint:
            app.router.add_api_route(
                path,
                endpoint,
                methods=[method],
                response_model=Cart,
                route_class_override=CommandRoute,
            )
            return endpoint

        return register

    # The cart answers are encoded by msgspec straight from the view (`cart_response`), not
    # validated and serialised by pydantic again; `response_model` documents them.
    @command("POST", "/carts/{cart_id}/items")
    async def add_item(
        cart_id: CartId, body: AddItemBody, correlation: CorrelationId = None
    ) -> Response:
        """Add `quantity` of `item_id`; the first item creates the cart."""
        view = await service.add_item(
            cart_id, body.item_id, body.quantity, correlation_id=correlation or new_id()
        )
        return cart_response(view)

    @command("DELETE", "/carts/{cart_id}/items/{item_id}")
    async def remove_item(
        cart_id: CartId,
        item_id: ItemId,
        quantity: Annotated[int | None, Query(ge=1, le=MAX_QUANTITY)] = None,
        correlation: CorrelationId = None,
    ) -> Response:
        """Remove `quantity` of the item, or all of it when omitted."""
        view = await service.remove_item(
            cart_id, item_id, quantity, correlation_id=correlation or new_id()
        )
        return cart_response(view)

    @command("POST", "/carts/{cart_id}/checkout")
    async def checkout(cart_id: CartId, correlation: CorrelationId = None) -> Response:
        """Check the cart out; it accepts no change afterwards."""
        view = await service.checkout(cart_id, correlation_id=correlation or new_id())
        return cart_response(view)

    @app.get("/carts/{cart_id}", response_model=Cart)
    async def get_cart(
        cart_id: CartId, version: Annotated[int | None, Query(ge=1, le=MAX_SQL_INT)] = None
    ) -> Response:
        """The cart now, or as it was right after its `version`-th event."""
        return cart_response(await service.get_cart(cart_id, version))

    @app.get("/carts/{cart_id}/events", response_model=CartEvents)
    async def cart_events(
        cart_id: CartId,
        after_version: Annotated[
            int, Query(ge=0, le=MAX_SQL_INT, description="only versions after this one")
        ] = 0,
    ) -> CartEvents:
        """The cart's stored events after `after_version`, oldest first; 404 if the cart has
        no event at all."""
        recorded = await service.cart_events(cart_id, after_version)
        return CartEvents(cart_id=cart_id, events=[Event.of(e) for e in recorded])

    @app.get("/events", response_model=Feed)
    async def feed(
        after: Annotated[
            int, Query(ge=0, le=MAX_SQL_INT, description="position to start after")
        ] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> Feed:
        """The global feed: events of every cart by position."""
        recorded = await service.feed(after, limit)
        next_after = recorded[-1].position if recorded else after
        return Feed(events=[Event.of(e) for e in recorded], next_after=next_after)

    install_command_lanes(app)
    return app
