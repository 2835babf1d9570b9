"""The HTTP command span: a `SERVER` span per command request (OpenTelemetry HTTP semantic
conventions), child of the request's W3C `traceparent` when it sends one, else a new trace."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from microservice_connector.tracing import context
from microservice_connector.web.access import MUTATING
from microservice_connector.web.guards import ASGIApp, Message, Receive, Scope, Send


class CommandSpans:
    """Wraps every command (POST, PUT, PATCH, DELETE) in a span current for its whole
    handling, named `<method> <route template>` once the route is known."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self._app(scope, receive, send)
            return
        method = scope["method"]
        headers = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope.get("headers") or []
            if name in (b"traceparent", b"tracestate")
        }
        started = context.tracer.start_span(
            method,
            context=context.W3C.extract(headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": scope["path"],
                "url.scheme": scope.get("scheme", "http"),
            },
        )
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with trace.use_span(started, end_on_exit=True, record_exception=True):
            try:
                await self._app(scope, receive, recording_send)
            finally:
                route = getattr(scope.get("route"), "path", None)
                if route is not None:
                    started.update_name(f"{method} {route}")
                    started.set_attribute("http.route", route)
                started.set_attribute("http.response.status_code", status)
                if status >= 500:
                    started.set_status(Status(StatusCode.ERROR))


def trace_commands(app: Any) -> None:
    """Install `CommandSpans` on a Starlette/FastAPI `app` when tracing is on."""
    if context.enabled():
        app.add_middleware(CommandSpans)
