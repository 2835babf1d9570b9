"""OpenTelemetry tracing, off (at no cost) unless the standard OTLP environment asks for it.

One trace runs from an HTTP command to its invoice: the W3C `traceparent`/`tracestate` of the
request (or a new trace) is stored in each event's metadata, carried in the broker headers of
the same names, and continued by billing, whose `InvoiceIssued` carries it on.
"""

from __future__ import annotations

from microservice_connector.tracing.context import (
    TRACE_HEADERS,
    current_trace,
    enabled,
    span,
    trace_id_of,
    trace_of,
)
from microservice_connector.tracing.setup import configure_tracing

__all__ = [
    "TRACE_HEADERS",
    "configure_tracing",
    "current_trace",
    "enabled",
    "span",
    "trace_id_of",
    "trace_of",
]
