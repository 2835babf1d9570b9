"""A request cut off by the server's stop answers 503 in JSON, as any other refusal, rather
than the server's bare 500: the client cannot tell whether a command cut off mid-way was
applied, and 503 is the answer it retries (a command with the same `Idempotency-Key`)."""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse

from microservice_connector.web.guards import ASGIApp, Receive, Scope, Send

STOPPED_DETAIL = (
    "the service stopped before it could answer; a command may or may not have been "
    "applied: retry it (with the same Idempotency-Key, so that it is applied at most once)"
)


class AnswerWhenStopped:
    """In front of `app`: an HTTP request cancelled (uvicorn cancels what is still running
    when its graceful stop runs out) before its answer began gets 503 with `detail` and
    `Retry-After`; one whose answer had begun ends as it would have. Other requests, and
    everything but cancellation, pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._app(scope, receive, send)
        except asyncio.CancelledError:
            if scope["type"] != "http":
                raise
            answer = JSONResponse(
                {"detail": STOPPED_DETAIL}, status_code=503, headers={"Retry-After": "1"}
            )
            try:
                await answer(scope, receive, send)
            except Exception:  # its answer had begun: the server ends the connection
                raise asyncio.CancelledError from None
