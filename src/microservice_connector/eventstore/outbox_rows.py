"""What the event store writes to the outbox for each event: the message of DESIGN §3.3."""

from __future__ import annotations

from datetime import datetime

from microservice_connector.events.envelope import RecordedEvent

POSITION_HEADER = "position"  # the event's place in the store's global feed


def message_headers(event: RecordedEvent) -> dict[str, str]:
    """The broker headers for `event`: its envelope (with its feed `position`), as strings,
    and its W3C trace context (`traceparent`, `tracestate`) when it has one."""
    headers = {
        "event-id": event.event_id,
        "event-type": event.event_type,
        "aggregate-id": event.aggregate_id,
        "aggregate-type": event.aggregate_type,
        "aggregate-version": str(event.version),
        "content-type": event.content_type,
        "schema-version": str(event.schema_version),
        "correlation-id": event.correlation_id or "",
        "causation-id": event.causation_id or "",
        "occurred-at": format_timestamp(event.timestamp),
        POSITION_HEADER: str(event.position),
    }
    if event.traceparent is not None:
        headers["traceparent"] = event.traceparent
        if event.tracestate:
            headers["tracestate"] = event.tracestate
    return headers


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, microseconds kept."""
    return moment.isoformat().replace("+00:00", "Z")
