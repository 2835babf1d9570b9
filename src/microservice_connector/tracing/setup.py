"""Turning tracing on: an SDK provider exporting OTLP/HTTP, only when the standard environment
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_TRACES_EXPORTER`)
asks for it, and `trace_id`/`span_id` on every log record."""

from __future__ import annotations

import logging
import os

from opentelemetry import trace

from microservice_connector.tracing import context

ASKING = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
messaging_system = ""  # `nats` or `kafka`, for the messaging spans' `messaging.system`


def wanted() -> bool:
    """Whether the environment asks for traces (`OTEL_TRACES_EXPORTER=none` says no)."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(os.environ.get(name) for name in ASKING)


def configure_tracing(service_name: str, broker: str) -> bool:
    """Export this process's spans as `service_name` when the environment asks; True if so.
    Idempotent: a second call (two services in one process) keeps the first provider."""
    global messaging_system
    if not wanted():
        return False
    messaging_system = broker
    if context.enabled():
        return True
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource)  # flushes its spans at exit
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    # Ours alone, not the global provider: libraries that trace whenever one is set (FastAPI
    # does) would add a second span per request, and the fast command lane is not theirs.
    context.switch(provider.get_tracer("microservice_connector"))
    for handler in logging.getLogger().handlers:
        handler.addFilter(TraceIdFilter())
    return True


class TraceIdFilter(logging.Filter):
    """Stamps each record with the current span's `trace_id` and `span_id` (hex), if any."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always keeps the record."""
        found = trace.get_current_span().get_span_context()
        if found.is_valid:
            record.trace_id = format(found.trace_id, "032x")
            record.span_id = format(found.span_id, "016x")
        return True
