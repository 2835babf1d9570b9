"""The live feed: woken by commits, reading from the store at its own pace, so a slow or
stalled client holds nothing in memory; `close()` ends every stream."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog
from microservice_connector.cart_service.infrastructure.live_feed import PAGE, LiveFeed
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import DatabaseUnavailable


class FakeStore:
    """Positions 1..n; counts the reads a feed makes; `down` makes reads fail."""

    def __init__(self) -> None:
        self.stored = 0
        self.reads = 0
        self.down = False

    async def read_after(self, after: int, limit: int) -> list[RecordedEvent]:
        self.reads += 1
        if self.down:
            raise DatabaseUnavailable("database test unavailable: gone")
        return [_event(p) for p in range(after + 1, min(self.stored, after + limit) + 1)]

    async def last_position(self) -> int:
        return self.stored


def _event(position: int) -> RecordedEvent:
    return RecordedEvent(
        position=position,
        event_id=f"e-{position}",
        aggregate_id="c-1",
        aggregate_type="ShoppingCart",
        version=position,
        event_type="ItemAdded",
        schema_version=1,
        content_type="application/json",
        event_data=b'{"cart_id":"c-1","item_id":"i","quantity":1,"timestamp":"2026-11-25T00:00:00Z"}',
        timestamp=datetime(2026, 11, 25, tzinfo=UTC),
    )


def _positions(frames: list[bytes]) -> list[int]:
    return [int(f.split(b"\n")[0].removeprefix(b"id: ")) for f in frames if f.startswith(b"id:")]


async def test_a_stalled_client_costs_reads_not_memory_and_catches_up_page_by_page() -> None:
    store = FakeStore()
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=30)
    stream = feed.stream(0)
    assert await anext(stream) == b"retry: 1000\n\n"
    store.stored = 1
    assert _positions([await anext(stream)]) == [1]
    reads = store.reads
    # The client stops reading while thousands of events are stored and announced.
    store.stored = 5 * PAGE + 1
    for _ in range(5 * PAGE):
        feed.notify()
    await asyncio.sleep(0.01)
    assert store.reads == reads  # nothing was read for it, nothing buffered
    received = [await anext(stream) for _ in range(5 * PAGE)]
    assert _positions(received) == list(range(2, 5 * PAGE + 2))
    assert store.reads - reads <= 6  # a page at a time
    await stream.aclose()
    assert feed.open_streams == 0


async def test_close_ends_a_waiting_stream_at_once() -> None:
    store = FakeStore()
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=30)

    async def drain() -> list[bytes]:
        return [frame async for frame in feed.stream(0)]

    reader = asyncio.ensure_future(drain())
    await asyncio.sleep(0.05)
    assert feed.open_streams == 1
    feed.close()
    frames = await asyncio.wait_for(reader, 2)
    assert frames == [b"retry: 1000\n\n"]


async def test_a_stream_outlives_a_database_outage() -> None:
    store = FakeStore()
    store.down = True
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=0.01)
    stream = feed.stream(0)
    assert await anext(stream) == b"retry: 1000\n\n"
    assert await anext(stream) == b": database unavailable\n\n"
    store.down, store.stored = False, 1
    frames = [await anext(stream) for _ in range(2)]
    assert _positions(frames) == [1]
    await stream.aclose()


async def test_a_new_stream_starts_after_the_recent_events_or_where_it_left_off() -> None:
    store = FakeStore()
    store.stored = 50
    feed = LiveFeed(store.read_after, store.last_position)
    assert await feed.start_after(None, 10) == 40
    assert await feed.start_after(None, 500) == 0
    assert await feed.start_after(7, 10) == 7


def test_the_handling_log_forgets_the_oldest_beyond_its_capacity() -> None:
    log = HandlingLog(capacity=3)
    for n in range(5):
        log.record(f"e-{n}", "c-1", n + 1, "duplicate")
    log.record("e-4", "c-1", 5, "deferred")
    assert [log.get(f"e-{n}") is None for n in range(5)] == [True, True, False, False, False]
    latest = log.get("e-4")
    assert latest is not None
    assert latest.counts == {"duplicate": 1, "deferred": 1}
    assert latest.last_outcome == "deferred"
