"""The cart half of an event's lineage: `GET /lineage/{event_id}` (the stored event, with its
correlation id, and its outbox row), `GET /outbox/{event_id}` (the outbox row alone, with the
broker's sequence) and `GET /outbox` (what is still to publish)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from microservice_connector.cart_service.infrastructure.schemas import Event
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore import SqlEventStore
from microservice_connector.eventstore.outbox import OutboxRecord
from microservice_connector.web.ids import id_path

EventId = Annotated[str, id_path("the event's id")]


class OutboxOut(BaseModel):
    """An event's outbox row: `published_at` and `broker_sequence` stay null until the broker
    acknowledged it; `attempts` counts publish tries, `last_error` the latest failure."""

    event_id: str
    topic: str
    status: str  # "pending" or "published"
    created_at: datetime
    published_at: datetime | None
    attempts: int
    last_error: str | None
    broker_sequence: int | None


class LineageOut(BaseModel):
    """A stored event and its outbox row (null if the store keeps none for it)."""

    event: Event
    outbox: OutboxOut | None


class OutboxStatusOut(BaseModel):
    """Rows still to publish, how old the oldest is, and how many were published."""

    pending: int
    oldest_age_seconds: float
    published: int


def lineage_router(store: SqlEventStore) -> APIRouter:
    """Routes reading the event store and its outbox, each on a worker thread."""
    router = APIRouter(tags=["event browser"])

    @router.get("/outbox", response_model=OutboxStatusOut)
    async def outbox_status() -> OutboxStatusOut:
        """Pending rows and the oldest one's age: how far publishing is behind."""
        status = await asyncio.to_thread(store.outbox.status)
        return OutboxStatusOut(
            pending=status.pending,
            oldest_age_seconds=round(status.oldest_age_seconds(), 3),
            published=status.published,
        )

    @router.get("/outbox/{event_id}", response_model=OutboxOut)
    async def outbox_row(event_id: EventId) -> OutboxOut:
        """The event's outbox row; 404 if the store has no row for it."""
        record = await asyncio.to_thread(store.outbox.record, event_id)
        if record is None:
            raise HTTPException(404, f"no outbox row for event {event_id}")
        return _outbox_out(record)

    @router.get("/lineage/{event_id}", response_model=LineageOut)
    async def lineage(event_id: EventId) -> LineageOut:
        """The stored event and its outbox row; 404 if no event has that id."""

        def read() -> tuple[RecordedEvent | None, OutboxRecord | None]:
            return store.find(event_id), store.outbox.record(event_id)

        found, record = await asyncio.to_thread(read)
        if found is None:
            raise HTTPException(404, f"no stored event {event_id}")
        return LineageOut(
            event=Event.of(found), outbox=None if record is None else _outbox_out(record)
        )

    return router


def _outbox_out(record: OutboxRecord) -> OutboxOut:
    return OutboxOut(
        event_id=record.event_id,
        topic=record.topic,
        status="pending" if record.published_at is None else "published",
        created_at=record.created_at,
        published_at=record.published_at,
        attempts=record.attempts,
        last_error=record.last_error,
        broker_sequence=record.broker_sequence,
    )
