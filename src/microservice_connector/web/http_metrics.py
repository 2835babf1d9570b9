"""HTTP request metrics by route template (bounded labels) and status, as pure ASGI."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram

from microservice_connector.web.guards import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class RequestMetrics:
    """Counts every request as `msc_http_requests_total{method, route, status}` and times it.
    `route` is the matched path template (`/carts/{cart_id}`), or `unmatched`."""

    def __init__(self, app: ASGIApp, requests: Counter, latency: Histogram) -> None:
        self._app = app
        self._requests = requests
        self._latency = latency
        # The labelled children, found once per label set rather than on every request.
        self._counters: dict[tuple[str, str, str], Counter] = {}
        self._timers: dict[tuple[str, str], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        # A plain function handing back `send`'s awaitable: one coroutine less on every send
        # (a live-feed stream sends for as long as it is open).
        def recording_send(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        try:
            await self._app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            counter = self._counters.get((method, route, str(status)))
            if counter is None:
                counter = self._requests.labels(method, route, str(status))
                self._counters[(method, route, str(status))] = counter
            counter.inc()
            timer = self._timers.get((method, route))
            if timer is None:
                timer = self._timers[(method, route)] = self._latency.labels(method, route)
            timer.observe(time.perf_counter() - started)


def instrument(app: FastAPI, registry: CollectorRegistry) -> Callable[[ASGIApp], RequestMetrics]:
    """Install `RequestMetrics` on `app`, its metrics registered on `registry`; returns what
    puts the same metrics around another ASGI app (a shorter path to some of `app`'s routes)."""
    requests = Counter(
        "msc_http_requests_total",
        "HTTP requests by method, route template and status code.",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "msc_http_request_duration_seconds",
        "HTTP request handling time by route template.",
        ["method", "route"],
        buckets=BUCKETS,
        registry=registry,
    )
    options: dict[str, Any] = {"requests": requests, "latency": latency}
    app.add_middleware(RequestMetrics, **options)
    return lambda inner: RequestMetrics(inner, requests, latency)
