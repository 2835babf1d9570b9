"""The envelope: everything about an event that is not its payload."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import msgspec


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended: payload plus the envelope fields the caller decides."""

    event_type: str
    payload: msgspec.Struct
    timestamp: datetime
    schema_version: int = 1
    correlation_id: str | None = None
    causation_id: str | None = None
    event_id: str | None = field(default=None)
    traceparent: str | None = None  # W3C trace context of the command that decided it
    tracestate: str | None = None


class RecordedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event as stored: `event_data` bytes exactly as written, and its full envelope.

    Immutable; a msgspec struct rather than a dataclass because replaying a long history
    builds one per event, and this builds ten times faster."""

    position: int
    event_id: str
    aggregate_id: str
    aggregate_type: str
    version: int
    event_type: str
    schema_version: int
    content_type: str
    event_data: bytes
    timestamp: datetime
    correlation_id: str | None = None
    causation_id: str | None = None
    traceparent: str | None = None  # W3C trace context, kept in the metadata column
    tracestate: str | None = None
