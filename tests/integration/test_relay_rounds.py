"""The relay's rounds: where commits wake it, it claims once per wake-up, not once more
right after every round to find the outbox empty."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore
from microservice_connector.eventstore.outbox import OutboxRow, SqlOutbox
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.memory import InMemoryBroker, InMemoryPublisher

AT = datetime(2026, 1, 2, tzinfo=UTC)


class CountingOutbox:
    """The real outbox, counting claims."""

    def __init__(self, outbox: SqlOutbox) -> None:
        self._outbox = outbox
        self.claims = 0

    def rows_to_publish(self, relay_id: str, limit: int, lease_seconds: float) -> list[OutboxRow]:
        self.claims += 1
        return self._outbox.rows_to_publish(relay_id, limit, lease_seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` after 10 s."""
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def append(store: SqlEventStore, version: int) -> None:
    event = NewEvent("ItemAdded", ItemAdded("cart-1", "a", 1, AT), AT)
    store.append(AppendRequest("cart-1", "ShoppingCart", version, [event]))


async def test_a_woken_relay_claims_once_per_commit(tmp_path: Path) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    outbox = CountingOutbox(store.outbox)
    relay = OutboxRelay(outbox, InMemoryPublisher(InMemoryBroker()), poll_interval=60)  # type: ignore[arg-type]
    stop = asyncio.Event()
    append(store, 0)
    relay.wake()  # as the commit listener does
    running = asyncio.create_task(relay.run(stop))
    try:
        await until(lambda: relay.published_total == 1, "the first event published")
        append(store, 1)
        relay.wake()
        await until(lambda: relay.published_total == 2, "the second event published")
        assert outbox.claims == 2
    finally:
        stop.set()
        await running
        store.close()
