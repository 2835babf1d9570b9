"""Request guards both services share: bearer tokens (on commands, reads and metrics, as
`access.AccessTokens` says) and a request body size limit. Pure ASGI, so they act before any
body is read or parsed."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from microservice_connector.web.access import MUTATING, AccessTokens

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 64 * 1024


async def _answer(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class TokenGuard:
    """Every request `access` guards needs `Authorization: Bearer <token>` with one of the
    tokens it accepts (compared in constant time); others answer 401 before the app runs."""

    def __init__(self, app: ASGIApp, access: AccessTokens) -> None:
        self._app = app
        self._access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        need = self._access.need(scope["method"], scope["path"])
        if need is None:
            await self._app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        # Every candidate is compared, so the time taken tells nothing about which matched.
        matches = [hmac.compare_digest(given, f"Bearer {t}".encode()) for t in need.tokens]
        if not any(matches):
            await _answer(
                send,
                401,
                f"this endpoint needs Authorization: Bearer <token> ({need.names})",
                ((b"www-authenticate", b"Bearer"),),
            )
            return
        await self._app(scope, receive, send)


class BodySizeLimit:
    """Bodies over `max_bytes` answer 413 — by Content-Length up front, or as soon as a
    streamed body passes the limit; nothing of such a request reaches the application."""

    def __init__(self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self._max):
            await _answer(send, 413, f"request body larger than {self._max} bytes")
            return
        if length is not None or scope["method"] not in MUTATING:
            await self._app(scope, receive, send)
            return
        # A streamed body of unknown length: read it (up to the limit) before the app does.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self._max:
                await _answer(send, 413, f"request body larger than {self._max} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        await self._app(scope, replay, send)


def protect(app: Any, *, access: AccessTokens, max_body_bytes: int) -> None:
    """Install both guards on a Starlette/FastAPI `app`; the token guard runs first. With no
    token set nothing is guarded, so the token guard is left out of every request's path."""
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    if access.any_set():
        app.add_middleware(TokenGuard, access=access)
