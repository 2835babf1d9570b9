"""`HEAD` on every `GET` route (RFC 9110 §9.3.2): the same status and headers, no body."""

from __future__ import annotations

from collections.abc import Awaitable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_END = {"type": "http.response.body", "body": b"", "more_body": False}


class HeadAsGet:
    """Answers `HEAD` as the app answers `GET`: the response's start (status, headers,
    `content-length` included) and then an empty body at once; what the app sends after is
    dropped, and its next `receive` says the client left, so a stream that listens for that
    ends (Starlette's `StreamingResponse` does under uvicorn's ASGI spec 2.3; under a 2.4
    server it would only end with the connection). The `GET` work is done in full. Other
    requests pass straight through, without a frame of this layer."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """Pass the request on, as `GET` if it is a `HEAD`."""
        if scope["type"] == "http" and scope["method"] == "HEAD":
            return self._head(scope, receive, send)
        return self._app(scope, receive, send)

    async def _head(self, scope: Scope, receive: Receive, send: Send) -> None:
        answered = False

        async def headers_only(message: Message) -> None:
            nonlocal answered
            if answered:
                return
            if message["type"] == "http.response.start":
                await send(message)
                await send(_END)
                answered = True

        async def until_answered() -> Message:
            if answered:
                return {"type": "http.disconnect"}
            return await receive()

        await self._app({**scope, "method": "GET"}, until_answered, headers_only)
