"""Rows of the `events` and `outbox` tables as the event store writes them, and events read
back from them: for SQLAlchemy (dicts, datetimes) and for SQLite's own driver (tuples, text)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from microservice_connector.events.codec import JSON_CONTENT_TYPE, Codec
from microservice_connector.events.envelope import NewEvent, RecordedEvent
from microservice_connector.events.new_ids import new_event_id
from microservice_connector.eventstore.outbox_rows import message_headers
from microservice_connector.eventstore.port import AppendRequest


class _Metadata(msgspec.Struct):
    schema_version: int = 1
    content_type: str = JSON_CONTENT_TYPE
    correlation_id: str | None = None
    causation_id: str | None = None


class _TracedMetadata(_Metadata):
    """The metadata of a traced event: untraced rows stay exactly as they were."""

    traceparent: str | None = None
    tracestate: str | None = None


_encode = msgspec.json.Encoder().encode
_decode_metadata = msgspec.json.Decoder(_TracedMetadata).decode


def recorded(
    request: AppendRequest, event: NewEvent, version: int, position: int, codec: Codec
) -> RecordedEvent:
    """`event` of `request` as it is stored at `version` and `position`, its payload encoded
    by `codec`; an event without an id gets a new time-ordered UUID."""
    return RecordedEvent(
        position=position,
        event_id=event.event_id or new_event_id(),
        aggregate_id=request.aggregate_id,
        aggregate_type=request.aggregate_type,
        version=version,
        event_type=event.event_type,
        schema_version=event.schema_version,
        content_type=codec.content_type,
        event_data=codec.encode(event.event_type, event.payload),
        timestamp=event.timestamp.astimezone(UTC),
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        traceparent=event.traceparent,
        tracestate=event.tracestate,
    )


def metadata_json(event: RecordedEvent) -> str:
    """The `metadata` column: the envelope fields that have no column of their own."""
    envelope = (event.schema_version, event.content_type, event.correlation_id, event.causation_id)
    if event.traceparent is None:
        return _encode(_Metadata(*envelope)).decode()
    return _encode(_TracedMetadata(*envelope, event.traceparent, event.tracestate)).decode()


def event_row(event: RecordedEvent) -> dict[str, Any]:
    """The `events` row of `event`, for SQLAlchemy."""
    return {
        "id": event.position,
        "event_id": event.event_id,
        "aggregate_id": event.aggregate_id,
        "aggregate_type": event.aggregate_type,
        "version": event.version,
        "event_type": event.event_type,
        "event_data": event.event_data,
        "metadata": metadata_json(event),
        "timestamp": event.timestamp,
    }


def outbox_headers(event: RecordedEvent) -> str:
    """The `outbox.headers` column of `event`: its message headers as JSON."""
    return _encode(message_headers(event)).decode()


def outbox_row(event: RecordedEvent, topic: str) -> dict[str, Any]:
    """The `outbox` row publishing `event` to `topic`, for SQLAlchemy."""
    return {
        "event_id": event.event_id,
        "topic": topic,
        "key": event.aggregate_id,
        "headers": outbox_headers(event),
        "payload": event.event_data,
        "created_at": datetime.now(UTC),
        "attempts": 0,
    }


def sqlite_time(moment: datetime) -> str:
    """A moment in UTC as SQLAlchemy stores a DateTime in SQLite: `2026-01-31 12:00:00.000000`."""
    return moment.astimezone(UTC).isoformat(" ", "microseconds")[:26]


def as_utc(moment: datetime) -> datetime:
    """The same moment, aware and in UTC; a naive one (as SQLite stores them) is taken as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def sqlite_event_row(event: RecordedEvent) -> tuple[Any, ...]:
    """The `events` row of `event` in the column order of `sqlite_statements.INSERT_EVENT`."""
    return (
        event.position,
        event.event_id,
        event.aggregate_id,
        event.aggregate_type,
        event.version,
        event.event_type,
        event.event_data,
        metadata_json(event),
        sqlite_time(event.timestamp),
    )


def sqlite_outbox_row(event: RecordedEvent, topic: str, created_at: str) -> tuple[Any, ...]:
    """The `outbox` row of `event` in the column order of `sqlite_statements.INSERT_OUTBOX`."""
    headers = outbox_headers(event)
    return (event.event_id, topic, event.aggregate_id, headers, event.event_data, created_at)


def from_row(row: Sequence[Any]) -> RecordedEvent:
    """The event in an `events` row read as (id, event_id, aggregate_id, aggregate_type,
    version, event_type, event_data, metadata, timestamp); a text timestamp (SQLite's
    driver) is read as SQLAlchemy writes it, naive UTC."""
    meta = _decode_metadata(row[7])
    moment = row[8]
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    return RecordedEvent(
        position=row[0],
        event_id=row[1],
        aggregate_id=row[2],
        aggregate_type=row[3],
        version=row[4],
        event_type=row[5],
        event_data=bytes(row[6]),
        timestamp=moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC),
        schema_version=meta.schema_version,
        content_type=meta.content_type,
        correlation_id=meta.correlation_id,
        causation_id=meta.causation_id,
        traceparent=meta.traceparent,
        tracestate=meta.tracestate,
    )
