"""An event's W3C trace context is kept in its metadata and sent on in the outbox headers, on
SQLite (both write paths) and PostgreSQL; an untraced event's rows stay as they were."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import GroupCommitStore, SqlEventStore
from microservice_connector.eventstore.port import AppendRequest
from microservice_connector.eventstore.schema import events

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def added(cart_id: str, *, traced: bool) -> NewEvent:
    return NewEvent(
        "ItemAdded",
        ItemAdded(cart_id, "item-001", 1, NOW),
        NOW,
        traceparent=TRACEPARENT if traced else None,
        tracestate="msc=1" if traced else None,
    )


@pytest.fixture
def store(sql_event_store: SqlEventStore) -> SqlEventStore:
    return sql_event_store


def test_the_trace_context_is_stored_and_sent_on(store: SqlEventStore) -> None:
    store.append(AppendRequest("c-1", "ShoppingCart", 0, [added("c-1", traced=True)]))
    [event] = store.load("c-1")
    assert (event.traceparent, event.tracestate) == (TRACEPARENT, "msc=1")
    [row] = store.outbox.rows_to_publish("relay-1", 10, 30.0)
    assert row.headers["traceparent"] == TRACEPARENT
    assert row.headers["tracestate"] == "msc=1"


def test_an_untraced_event_has_no_trace_anywhere(store: SqlEventStore) -> None:
    store.append(AppendRequest("c-2", "ShoppingCart", 0, [added("c-2", traced=False)]))
    [event] = store.load("c-2")
    assert event.traceparent is None
    [row] = store.outbox.rows_to_publish("relay-1", 10, 30.0)
    assert "traceparent" not in row.headers
    with store.writer.connect() as connection:
        metadata = connection.execute(select(events.c["metadata"])).scalar_one()
    assert set(json.loads(metadata)) == {
        "schema_version",
        "content_type",
        "correlation_id",
        "causation_id",
    }


def test_the_group_commit_writer_keeps_it_too(tmp_path: Path) -> None:
    sql_store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}", outbox_topic="cart.events")
    store = GroupCommitStore(sql_store)
    try:
        request = AppendRequest("c-3", "ShoppingCart", 0, [added("c-3", traced=True)])
        asyncio.run(store.append(request))
        [event] = sql_store.load("c-3")
        [row] = sql_store.outbox.rows_to_publish("relay-1", 10, 30.0)
    finally:
        store.close()
    assert event.traceparent == TRACEPARENT
    assert row.headers["traceparent"] == TRACEPARENT
