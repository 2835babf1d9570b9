"""The cart service's front door: a plain command skips the middleware it does not need.

A command runs through about a dozen ASGI layers on its way to its route (the server's proxy
headers, FastAPI's error, telemetry and body-limit layers, the body-size guard, metrics, the
`Idempotency-Key` middleware, exception handling, the exit stack, the router and the command
lanes); each costs a call and a wrapped `send` (together 7% of a command's CPU in process:
`bench/command_cpu.py`). `CommandDoor` sits in front of the app's whole stack: a request that
matches a `CommandRoute`, carries no `Idempotency-Key`, no chunked body and a
`Content-Length` within the limit, and that its route reads plainly
(`CommandRoute.read_plainly`), is answered by the route's own endpoint behind only the
layers its answer depends on: the 500 answer, request metrics and the app's own exception
handlers. Every other request, and every request when a token or tracing could apply, takes
the whole stack as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware

from microservice_connector.cart_service.infrastructure.fast_commands import (
    CommandRoute,
    CommandRoutes,
    Values,
)
from microservice_connector.cart_service.infrastructure.idempotency_http import (
    HEADER as IDEMPOTENCY_HEADER,
)
from microservice_connector.web.guards import ASGIApp, Receive, Scope, Send

_COMMAND = "msc.command"  # the scope key carrying the route and its values to the endpoint
_IDEMPOTENCY_KEY = IDEMPOTENCY_HEADER.lower().encode()  # the one the middleware acts on
_TRANSFER_ENCODING = b"transfer-encoding"
_CONTENT_LENGTH = b"content-length"


class CommandDoor:
    """In front of `app`'s middleware stack (see the module): plain commands on a short
    path, the rest on the whole stack; the answers are the same either way. Build it once
    every route and middleware is in place, as `app.middleware_stack` or inside it."""

    def __init__(
        self, app: FastAPI, *, measured: Callable[[ASGIApp], ASGIApp], max_body_bytes: int
    ) -> None:
        self._whole = app.build_middleware_stack()
        self._routes = CommandRoutes.of(app)
        self._max_body = max_body_bytes
        self._short = _short_path(app, measured, _call_endpoint)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._plain_head(scope):
            route = self._routes.matching(scope)
            if route is not None:
                values, receive = await route.read_plainly(scope, receive)
                if values is not None:
                    scope[_COMMAND] = (route, values)
                    await self._short(scope, receive, send)
                    return
        await self._whole(scope, receive, send)

    def _plain_head(self, scope: Scope) -> bool:
        """No `Idempotency-Key`, no chunked body, and a `Content-Length` (if any) in digits
        within the limit: nothing the whole stack's guards would act on."""
        for name, value in scope["headers"]:
            key = name.lower()
            if key == _CONTENT_LENGTH:
                if not value.isdigit() or int(value) > self._max_body:
                    return False
            elif key in (_IDEMPOTENCY_KEY, _TRANSFER_ENCODING):
                return False
        return True


async def _call_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    route: CommandRoute
    values: Values
    route, values = scope[_COMMAND]
    await route.execute(values, scope, receive, send)


def _short_path(app: FastAPI, measured: Callable[[ASGIApp], ASGIApp], inner: ASGIApp) -> ASGIApp:
    """`inner` inside `app`'s own exception handlers, then its metrics, then its 500 answer,
    in the order of `app`'s whole stack; the handlers split as FastAPI splits them."""
    error_handler: Any = None
    handlers: dict[Any, Any] = {}
    for key, handler in app.exception_handlers.items():
        if key in (500, Exception):
            error_handler = handler
        else:
            handlers[key] = handler
    handled = ExceptionMiddleware(inner, handlers=handlers, debug=app.debug)
    return ServerErrorMiddleware(measured(handled), handler=error_handler, debug=app.debug)
