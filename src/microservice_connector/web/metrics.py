"""`GET /metrics`: Prometheus text from the service's own registry, no redirect."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Info,
    generate_latest,
)


def service_registry(service: str | None = None, instance: str | None = None) -> CollectorRegistry:
    """A registry of one service's own metrics, plus the process, platform and GC ones, and
    when `service` and `instance` are given, `msc_instance_info{service, instance_id} 1`.

    The label is `instance_id`, not `instance`, which Prometheus sets to the scrape target;
    join on it with `* on(instance) group_left(instance_id) msc_instance_info`.
    """
    registry = CollectorRegistry()
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    if service is not None and instance is not None:
        Info(
            "msc_instance", "The service this process runs and its instance id.", registry=registry
        ).info({"service": service, "instance_id": instance})
    return registry


def metrics_router(registry: CollectorRegistry) -> APIRouter:
    """A router serving `registry` at exactly `/metrics`."""
    router = APIRouter(tags=["metrics"])

    @router.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
