"""The live feed: one read per round fanned out to every stream, a stalled client holding a
bounded buffer and catching up from the store, a cap on streams; `close()` ends them all.
A crowd of streams opening at once costs one read; a round gives way to requests in flight,
for a bounded time. No test sleeps to wait: each lets the event loop run until a condition
holds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog
from microservice_connector.cart_service.infrastructure.live_feed import (
    PAGE,
    LiveFeed,
    RequestsInFlight,
    TooManyStreams,
)
from microservice_connector.cart_service.infrastructure.ui_routes import CountRequests
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.web.guards import Message, Receive, Scope, Send


class FakeStore:
    """Positions 1..n; counts the reads a feed makes and those that answered; `down` makes
    reads fail. A read lets other tasks run before it answers, as a read on a worker thread
    does."""

    def __init__(self) -> None:
        self.stored = 0
        self.reads = 0
        self.answered = 0
        self.down = False

    async def read_after(self, after: int, limit: int) -> list[RecordedEvent]:
        self.reads += 1
        await asyncio.sleep(0)
        self.answered += 1
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
    return [
        int(line.removeprefix(b"id: "))
        for chunk in frames
        for line in chunk.split(b"\n")
        if line.startswith(b"id: ")
    ]


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    """Let the event loop run until `condition` holds; fail after `within_s` seconds."""
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0)


async def test_a_stream_sends_the_stored_events_then_the_new_ones_each_once_in_order() -> None:
    store = FakeStore()
    store.stored = 2 * PAGE + 5  # its own catch-up reads three pages
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=30, round_interval_s=0)
    stream = feed.stream(feed.subscribe(0))
    assert await anext(stream) == b"retry: 1000\n\n"
    received = [await anext(stream) for _ in range(3)]
    assert _positions(received) == list(range(1, 2 * PAGE + 6))
    for total in (2 * PAGE + 6, 2 * PAGE + 9):  # then the pump hands it what is new
        store.stored = total
        feed.notify()
        received.append(await asyncio.wait_for(anext(stream), 5))
    assert _positions(received) == list(range(1, 2 * PAGE + 10))
    await stream.aclose()
    assert feed.open_streams == 0


async def test_events_are_read_once_per_round_however_many_streams_are_open() -> None:
    store = FakeStore()
    store.stored = 3
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=30, round_interval_s=0)
    streams = [feed.stream(feed.subscribe(0)) for _ in range(50)]
    for stream in streams:
        assert await anext(stream) == b"retry: 1000\n\n"
        assert _positions([await anext(stream)]) == [1, 2, 3]
    reads = store.reads
    store.stored = 4
    feed.notify()
    for stream in streams:
        assert _positions([await asyncio.wait_for(anext(stream), 5)]) == [4]
    assert store.reads - reads == 1  # the pump's one read served all 50
    for stream in streams:
        await stream.aclose()


async def test_a_stalled_client_holds_a_bounded_buffer_and_later_gets_every_event_once() -> None:
    store = FakeStore()
    store.stored = 1
    feed = LiveFeed(
        store.read_after,
        store.last_position,
        idle_check_s=30,
        round_interval_s=0,
        buffer_bytes=4096,
    )
    subscription = feed.subscribe(0)
    stream = feed.stream(subscription)
    assert await anext(stream) == b"retry: 1000\n\n"
    assert _positions([await anext(stream)]) == [1]
    # The client stops reading while thousands of events are stored and fanned out.
    store.stored = 5 * PAGE + 1
    feed.notify()
    await until(lambda: subscription.dropped)
    assert subscription.waiting_bytes <= 4096
    received = []
    while not received or _positions(received)[-1] < 5 * PAGE + 1:
        received.append(await asyncio.wait_for(anext(stream), 5))
    assert _positions(received) == list(range(2, 5 * PAGE + 2))
    await stream.aclose()


async def test_a_quiet_stream_gets_a_heartbeat_from_the_pump() -> None:
    store = FakeStore()
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=0.01)
    stream = feed.stream(feed.subscribe(0))
    assert await anext(stream) == b"retry: 1000\n\n"
    assert await asyncio.wait_for(anext(stream), 5) == b": idle\n\n"
    await stream.aclose()


async def test_past_the_cap_a_stream_is_refused_until_one_closes() -> None:
    store = FakeStore()
    feed = LiveFeed(store.read_after, store.last_position, max_streams=2)
    first, _second = feed.subscribe(0), feed.subscribe(0)
    with pytest.raises(TooManyStreams, match="maximum of 2 streams"):
        feed.subscribe(0)
    first.close()
    feed.subscribe(0).close()


async def test_close_ends_a_waiting_stream_at_once() -> None:
    store = FakeStore()
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=30)

    async def drain() -> list[bytes]:
        return [frame async for frame in feed.stream(feed.subscribe(0))]

    reader = asyncio.ensure_future(drain())
    await until(lambda: store.reads == 1)  # it read, found nothing, and waits
    feed.close()
    frames = await asyncio.wait_for(reader, 2)
    assert frames == [b"retry: 1000\n\n"]
    assert feed.open_streams == 0


async def test_a_stream_outlives_a_database_outage() -> None:
    store = FakeStore()
    store.down = True
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=0.01)
    stream = feed.stream(feed.subscribe(0))
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


async def test_streams_opening_together_make_one_read_and_each_gets_every_new_event() -> None:
    store = FakeStore()
    store.stored = 5
    feed = LiveFeed(store.read_after, store.last_position, idle_check_s=30, round_interval_s=0)
    start = await feed.start_after(None, 0)
    streams = [feed.stream(feed.subscribe(start)) for _ in range(100)]
    # All of them are past their first frame, and so waiting to read, before any read ends.
    assert [await anext(stream) for stream in streams] == [b"retry: 1000\n\n"] * 100
    nexts = [asyncio.ensure_future(anext(stream)) for stream in streams]
    await until(lambda: store.answered >= 1)  # the first stream's read started the pump
    store.stored = 7
    feed.notify()
    frames = await asyncio.wait_for(asyncio.gather(*nexts), 5)
    assert all(_positions([f]) == [6, 7] for f in frames)
    assert store.reads == 2  # one stream's own read, then the pump's, for all 100
    for stream in streams:
        await stream.aclose()


async def test_a_round_waits_while_a_request_is_in_flight_then_reaches_every_stream() -> None:
    store = FakeStore()
    store.stored = 1
    feed = LiveFeed(
        store.read_after, store.last_position, idle_check_s=30, round_interval_s=0, max_hold_s=30
    )
    subscriptions = [feed.subscribe(0) for _ in range(3)]
    streams = [feed.stream(subscription) for subscription in subscriptions]
    for stream in streams:
        assert await anext(stream) == b"retry: 1000\n\n"
        assert _positions([await anext(stream)]) == [1]
    nexts = [asyncio.ensure_future(anext(stream)) for stream in streams]
    feed.requests.started()  # a command is being answered
    reads = store.reads
    store.stored = 2
    feed.notify()
    await until(lambda: store.reads == reads + 1)  # the pump read the round...
    for _ in range(100):
        await asyncio.sleep(0)
    assert not any(s.waiting for s in subscriptions)  # ...and holds it back
    assert not any(n.done() for n in nexts)
    feed.requests.finished()
    frames = await asyncio.wait_for(asyncio.gather(*nexts), 5)
    assert [_positions([f]) for f in frames] == [[2], [2], [2]]
    for stream in streams:
        await stream.aclose()


async def test_requests_that_never_end_hold_a_round_back_no_longer_than_max_hold() -> None:
    store = FakeStore()
    store.stored = 1
    feed = LiveFeed(
        store.read_after, store.last_position, idle_check_s=30, round_interval_s=0, max_hold_s=0.05
    )
    stream = feed.stream(feed.subscribe(0))
    assert await anext(stream) == b"retry: 1000\n\n"
    assert _positions([await anext(stream)]) == [1]
    feed.requests.started()  # and never finished
    store.stored = 2
    feed.notify()
    held_since = asyncio.get_running_loop().time()
    assert _positions([await asyncio.wait_for(anext(stream), 5)]) == [2]
    assert asyncio.get_running_loop().time() - held_since >= 0.05
    store.stored = 3  # and each later round too, while the load goes on
    feed.notify()
    assert _positions([await asyncio.wait_for(anext(stream), 5)]) == [3]
    await stream.aclose()


async def test_requests_are_counted_until_answered_even_when_they_fail_but_streams_never() -> None:
    requests = RequestsInFlight()
    counted: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        counted.append(requests.count)
        if scope["path"] == "/boom":
            raise RuntimeError("the endpoint failed")

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    async def send(message: Message) -> None:
        pass

    counting = CountRequests(app, requests)
    await counting({"type": "http", "path": "/carts/c-1/items"}, receive, send)
    await counting({"type": "http", "path": "/events/stream"}, receive, send)
    with pytest.raises(RuntimeError):
        await counting({"type": "http", "path": "/boom"}, receive, send)
    assert counted == [1, 0, 1]
    assert requests.count == 0


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
