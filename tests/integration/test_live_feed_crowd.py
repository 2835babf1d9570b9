"""Live-feed streams opening at once, and one by one while events are stored, on SQLite and
PostgreSQL: each sends every event after its start once, in order, whether it read the store
itself or trusted the pump from where it started, and the crowd that opened at once read the
store once between them. No sleeps: readers run until they have the last event, with a
deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime

from microservice_connector.cart_service.infrastructure.live_feed import LiveFeed
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent, RecordedEvent
from microservice_connector.eventstore import SqlEventStore
from microservice_connector.eventstore.port import AppendRequest

NOW = datetime(2026, 12, 5, tzinfo=UTC)
BEFORE, DURING, STREAMS = 3, 30, 40


def _store(store: SqlEventStore, n: int) -> None:
    cart_id = f"c-{n}"
    event = NewEvent("ItemAdded", ItemAdded(cart_id, "item-001", 1, NOW), NOW)
    store.append(AppendRequest(cart_id, "ShoppingCart", 0, [event]))


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.001)


def _positions(chunk: bytes) -> list[int]:
    return [int(line[4:]) for line in chunk.split(b"\n") if line.startswith(b"id: ")]


async def test_streams_opening_while_events_are_stored_each_send_every_later_one_once(
    sql_event_store: SqlEventStore,
) -> None:
    store = sql_event_store
    for n in range(BEFORE):
        _store(store, n)
    crowd: set[object] = set()  # the tasks of the streams that open at once
    crowd_reads = 0

    async def read_after(after: int, limit: int) -> list[RecordedEvent]:
        nonlocal crowd_reads
        crowd_reads += asyncio.current_task() in crowd
        return await asyncio.to_thread(store.read_all, after, limit)

    async def last_position() -> int:
        return await asyncio.to_thread(store.last_position)

    feed = LiveFeed(read_after, last_position, idle_check_s=30, round_interval_s=0)
    last = BEFORE + DURING

    async def follow(start: int) -> tuple[int, list[int]]:
        sent: list[int] = []
        stream = feed.stream(feed.subscribe(start))
        try:
            async for chunk in stream:
                sent += _positions(chunk)
                if sent and sent[-1] >= last:
                    return start, sent
        finally:
            await stream.aclose()
        raise AssertionError("the stream ended")

    stored: asyncio.Queue[int] = asyncio.Queue()

    async def store_events() -> None:
        for n in range(BEFORE, last):
            await asyncio.to_thread(_store, store, n)
            feed.notify()
            stored.put_nowait(n)

    # Half open at once at the newest event; then events are stored, and the other half
    # opens one by one meanwhile, each after one more event was stored.
    start = await feed.start_after(None, 0)
    followers = [asyncio.ensure_future(follow(start)) for _ in range(STREAMS // 2)]
    crowd.update(followers)
    # The crowd settles first: one of them reads, the pump starts, and the others, woken by
    # that read's end, find it covering them (each needs one turn of the loop for that).
    await _until(lambda: feed.pumping, "the crowd's one read to start the pump")
    for _ in range(STREAMS):
        await asyncio.sleep(0)
    writer = asyncio.ensure_future(store_events())
    for _ in range(STREAMS // 2):
        await asyncio.wait_for(stored.get(), 30)
        followers.append(asyncio.ensure_future(follow(await feed.start_after(None, 0))))
    await asyncio.wait_for(writer, 30)
    results = await asyncio.wait_for(asyncio.gather(*followers), 30)
    for start, sent in results:
        assert sent == list(range(start + 1, last + 1))
    assert {start for start, _ in results[: STREAMS // 2]} == {BEFORE}
    assert results[-1][0] > BEFORE
    assert crowd_reads == 1  # the crowd opening at once read the store once between them
    feed.close()
