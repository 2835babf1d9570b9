"""HTTP request metrics by route template (bounded labels) and status."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Histogram

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def instrument(app: FastAPI, registry: CollectorRegistry) -> None:
    """Count every request as `msc_http_requests_total{method, route, status}` and time it.
    `route` is the matched path template (`/carts/{cart_id}`), or `unmatched`."""
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

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            method = request.method if request.method in _METHODS else "OTHER"
            requests.labels(method=method, route=route, status=str(status)).inc()
            latency.labels(method=method, route=route).observe(time.perf_counter() - started)


_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
