"""A fast lane for well-formed cart commands, beside the FastAPI routes that document them.

FastAPI's request handling (dependency solving, pydantic validation) cost about 80 µs per
command here, eight times the command itself. This pure-ASGI layer answers the three
commands when a request is plainly valid, with the same status, body and metrics label as
the route; anything it is not sure of (an odd header, a body pydantic might read
differently, a query it does not know) goes on to FastAPI untouched, which then answers,
or rejects, exactly as before. Failures of the command itself are answered by the app's
own exception handlers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from starlette.requests import Request

from microservice_connector.cart_service.application import CartService, CartView
from microservice_connector.cart_service.domain import MAX_QUANTITY
from microservice_connector.cart_service.infrastructure.schemas import cart_response
from microservice_connector.web.guards import ASGIApp, Message, Receive, Scope, Send

_ID = "[A-Za-z0-9._:-]{1,64}"
_ID_RE = re.compile(_ID)
_ADD = re.compile(f"/carts/({_ID})/items")
_REMOVE = re.compile(f"/carts/({_ID})/items/({_ID})")
_CHECKOUT = re.compile(f"/carts/({_ID})/checkout")
_QUANTITY_QUERY = re.compile(rb"quantity=([1-9][0-9]{0,4})")
_JSON = b"application/json"
_CORRELATION = b"x-correlation-id"
_decode_json = msgspec.json.decode

Command = Callable[[str], Awaitable[CartView]]


class FastCommands:
    """Answers add, remove and checkout requests that need no validation message; passes
    every other request to `app` as it came (a body it read is handed on unchanged)."""

    def __init__(self, app: ASGIApp, service: CartService) -> None:
        self._app = app
        self._service = service
        self._routes: dict[tuple[str, str], Any] = {}
        self.answered = 0  # requests this lane answered (the rest went on to the app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("POST", "DELETE")
            or scope.get("root_path")
        ):
            await self._app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        headers = _plain_headers(scope)
        if headers is None:
            await self._app(scope, receive, send)
            return
        if method == "POST" and (match := _ADD.fullmatch(path)):
            await self._add(match[1], headers, scope, receive, send)
        elif method == "POST" and (match := _CHECKOUT.fullmatch(path)):
            cart_id = match[1]
            await self._answer(
                "/carts/{cart_id}/checkout",
                lambda correlation: self._service.checkout(cart_id, correlation_id=correlation),
                headers,
                scope,
                receive,
                send,
            )
        elif method == "DELETE" and (match := _REMOVE.fullmatch(path)):
            plain, quantity = _quantity(scope.get("query_string", b""))
            if not plain:
                await self._app(scope, receive, send)
                return
            cart_id, item_id = match[1], match[2]
            await self._answer(
                "/carts/{cart_id}/items/{item_id}",
                lambda correlation: self._service.remove_item(
                    cart_id, item_id, quantity, correlation_id=correlation
                ),
                headers,
                scope,
                receive,
                send,
            )
        else:
            await self._app(scope, receive, send)

    async def _add(
        self, cart_id: str, headers: dict[bytes, bytes], scope: Scope, receive: Receive, send: Send
    ) -> None:
        body, last = await _read_body(receive)
        fields = None if last is None else _add_fields(headers, body)
        if fields is None:
            await self._app(scope, _replay(body, last, receive), send)
            return
        item_id, quantity = fields
        await self._answer(
            "/carts/{cart_id}/items",
            lambda correlation: self._service.add_item(
                cart_id, item_id, quantity, correlation_id=correlation
            ),
            headers,
            scope,
            receive,
            send,
        )

    async def _answer(
        self,
        route: str,
        command: Command,
        headers: dict[bytes, bytes],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        scope["route"] = self._route(scope, route)  # the metrics label the route would set
        self.answered += 1
        correlation = headers.get(_CORRELATION)
        try:
            view = await command(
                correlation.decode("latin-1") if correlation is not None else str(uuid.uuid4())
            )
        except Exception as exc:
            handler = _handler_for(scope, exc)
            if handler is None:
                raise  # as from the route: the outermost middleware answers 500
            response = await handler(Request(scope, receive), exc)
            await response(scope, receive, send)
            return
        await cart_response(view)(scope, receive, send)

    def _route(self, scope: Scope, path: str) -> Any:
        method = scope["method"]
        found = self._routes.get((method, path))
        if found is None:
            for candidate in scope["app"].routes:
                if getattr(candidate, "path", None) == path and method in getattr(
                    candidate, "methods", ()
                ):
                    found = self._routes[(method, path)] = candidate
        return found


def _plain_headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The headers by lower-case name, or None if the fast lane should not judge them: a
    repeated correlation id, or one that is not an id."""
    headers: dict[bytes, bytes] = {}
    for name, value in scope.get("headers") or []:
        name = name.lower()
        if name == _CORRELATION and (
            name in headers or not _ID_RE.fullmatch(value.decode("latin-1"))
        ):
            return None
        headers[name] = value
    return headers


def _add_fields(headers: dict[bytes, bytes], body: bytes) -> tuple[str, int] | None:
    """`item_id` and `quantity` of a body the route would accept, or None if in doubt."""
    if headers.get(b"content-type", b"").lower() != _JSON:
        return None
    try:
        data = _decode_json(body)
    except msgspec.DecodeError:
        return None
    if type(data) is not dict or data.keys() != {"item_id", "quantity"}:
        return None
    item_id, quantity = data["item_id"], data["quantity"]
    if type(item_id) is not str or not _ID_RE.fullmatch(item_id):
        return None
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        return None
    return item_id, quantity


def _quantity(query: bytes) -> tuple[bool, int | None]:
    """Whether the removal's query is plain, and its `quantity` (None: all of the item)."""
    if not query:
        return True, None
    match = _QUANTITY_QUERY.fullmatch(query)
    if match is None or int(match[1]) > MAX_QUANTITY:
        return False, None
    return True, int(match[1])


async def _read_body(receive: Receive) -> tuple[bytes, Message | None]:
    """The whole body, and the last message read; None instead of it if the client left."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks), message


def _replay(body: bytes, last: Message | None, receive: Receive) -> Receive:
    """A `receive` that hands on the body already read, then the rest as it comes."""
    replayed = False

    async def again() -> Message:
        nonlocal replayed
        if not replayed:
            replayed = True
            if last is None:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


def _handler_for(scope: Scope, exc: Exception) -> Any:
    """The app's handler for `exc` as its exception middleware would pick it; None for
    what only the outermost (500) handler takes."""
    handlers = scope["app"].exception_handlers
    for kind in type(exc).__mro__:
        if kind is Exception:
            return None
        if kind in handlers:
            return handlers[kind]
    return None
