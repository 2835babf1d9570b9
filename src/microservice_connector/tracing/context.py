"""Spans and W3C trace context: every helper returns at once, doing nothing, while tracing is
off, so the hot paths pay one flag test."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from types import MappingProxyType
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT, TRACESTATE = "traceparent", "tracestate"
TRACE_HEADERS = (TRACEPARENT, TRACESTATE)
NO_TRACE: Mapping[str, str] = MappingProxyType({})

W3C = TraceContextTextMapPropagator()
tracer: trace.Tracer = trace.NoOpTracer()
_NOTHING: AbstractContextManager[Any] = nullcontext()
_on = False


def switch(to: trace.Tracer | None) -> None:
    """Record spans with `to` from now on, or nothing at all with None."""
    global _on, tracer
    tracer, _on = (to, True) if to is not None else (trace.NoOpTracer(), False)


def enabled() -> bool:
    """Whether spans are recorded and exported."""
    return _on


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, str | int] | None = None,
    parent: Mapping[str, str] | None = None,
) -> AbstractContextManager[Any]:
    """A span named `name`, current inside the `with`, child of the W3C context in `parent`
    (headers or stored metadata) when it holds one, else of the current span."""
    if not _on:
        return _NOTHING
    context = W3C.extract(parent) if parent else None
    return tracer.start_as_current_span(name, context=context, kind=kind, attributes=attributes)


def current_trace() -> Mapping[str, str]:
    """The current span's `traceparent` (and `tracestate`), to store or send on; empty when
    tracing is off or no span is current."""
    if not _on:
        return NO_TRACE
    carrier: dict[str, str] = {}
    W3C.inject(carrier)
    return carrier


def trace_of(headers: Mapping[str, str]) -> Mapping[str, str]:
    """The W3C trace headers among `headers` (a message's, a request's), or none."""
    if not _on or TRACEPARENT not in headers:
        return NO_TRACE
    return {name: headers[name] for name in TRACE_HEADERS if name in headers}


def trace_id_of(traceparent: str | None) -> str | None:
    """The 32-hex-digit trace id inside a `traceparent`, or None."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None
