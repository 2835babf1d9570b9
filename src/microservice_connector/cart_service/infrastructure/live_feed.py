"""The live feed behind `GET /events/stream`: server-sent events, fanned out off the command path.

One pump per feed reads what is new from the event store once per round (woken by the store's
commits, at most `ROUND_INTERVAL_S` apart), encodes each event once, and hands the same bytes
to every open stream, a slice of streams at a time so commands keep their turn on the event
loop. A slice waits while the server is answering a request (`RequestsInFlight`, counted by the
route module's `CountRequests`), so stream writes fill the gaps between answers instead of
delaying them; a round's slices stop waiting `MAX_HOLD_S` after it began, so under unbroken
load the feed lags by at most that. A stream that is behind (resuming with `Last-Event-ID`, or
too slow to take what it was handed) reads its own way forward from the store, a page at a time,
and then sends what the pump handed it, skipping what it already sent. A new stream that starts
where the pump is reads nothing; while no pump runs, one stream's read may start it and the
streams opening meanwhile wait for that read, so a crowd opening at once costs one read. So a
slow client never makes the pump wait and costs at most `BUFFER_BYTES` of memory, nothing is
skipped or sent twice, and while no stream is up to date the pump reads nothing.

Why nothing is skipped: a stream subscribes before its first read, so every event committed
after a read of its own reaches it through the pump; it trusts the pump only once a read of its
own returned a short page that reached at least where the pump began, and no batch of its was
dropped for space since that read began. A stream that starts at or past the pump's position
trusts it at once: the pump has handed out nothing past that start, and everything it hands out
from then on (its position is set just before each fan-out's list of streams is taken) reaches
this stream, which was subscribed already.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

from microservice_connector.cart_service.infrastructure.schemas import Event
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import DatabaseUnavailable

ReadAfter = Callable[[int, int], Awaitable[list[RecordedEvent]]]
LastPosition = Callable[[], Awaitable[int]]

PAGE = 200
ROUND_INTERVAL_S = 0.25  # at most four fan-outs a second, however busy the store
IDLE_CHECK_S = 2.0  # how soon other processes' events show up; a quiet stream's heartbeat
BUFFER_BYTES = 1 << 20  # what one stream may have waiting before it must catch up itself
# Streams handed a round before the pump yields to other work: a command that arrives while
# a slice's streams write waits for them (bench/live_feed.py, 1,000 streams, command p99 with
# streams against without: 1.25 and 1.40x with 4, 1.27-2.01x with 8, 2.40-3.24x with 16).
FANOUT_SLICE = 4
MAX_HOLD_S = 1.0  # how long requests in flight may hold back one round's fan-out
# Between slices the event loop idles this long: a thread waiting for the GIL (the store's
# writer) gets it at once rather than after the 5 ms switch interval, and a round's writes
# reach the network spread out instead of as one burst (1,000 streams: about 0.3 s a round).
SLICE_PAUSE_S = 0.001
DEFAULT_MAX_STREAMS = 256
RETRY_MS = 1000


class TooManyStreams(Exception):
    """The feed already serves its maximum of concurrent streams."""


class RequestsInFlight:
    """How many requests the service is answering now, counted on the event loop; the feed
    hands a slice of streams their round only while it is none (or once its hold ran out)."""

    def __init__(self) -> None:
        self.count = 0
        self._waiters: list[asyncio.Future[None]] = []

    def started(self) -> None:
        """A request is being answered."""
        self.count += 1

    def finished(self) -> None:
        """A request was answered (or failed); at none, whoever waits for none goes on."""
        self.count -= 1
        if self.count == 0:
            for waiter in self._waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self._waiters.clear()

    async def until_none(self, deadline: float) -> None:
        """Return once no request is in flight, or at `deadline` (event-loop time) at the latest."""
        loop = asyncio.get_running_loop()
        if not self.count or loop.time() >= deadline:
            return
        waiter = loop.create_future()
        self._waiters.append(waiter)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    await waiter
        finally:  # under unbroken load the count never reaches none to clear it
            if waiter in self._waiters:
                self._waiters.remove(waiter)


@dataclass(eq=False)
class _Batch:
    """One round's events, encoded once: each frame by position, and all of them joined."""

    positions: list[int]
    frames: list[bytes]
    joined: bytes

    def after(self, position: int) -> bytes:
        """The frames of events after `position`."""
        if self.positions[0] > position:
            return self.joined
        return b"".join(f for p, f in zip(self.positions, self.frames, strict=True) if p > position)


@dataclass(eq=False)
class Subscription:
    """One open stream: its waiting batches while it is up to date, and whether it fell
    behind. Made by `LiveFeed.subscribe`; `close()` (idempotent) gives its place back."""

    feed: LiveFeed
    after: int
    buffer_bytes: int = BUFFER_BYTES
    waiting: list[_Batch] = field(default_factory=list)
    waiting_bytes: int = 0
    dropped: bool = False  # batches were dropped for space: it must read the store again
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def hand(self, batch: _Batch) -> None:
        """Give it a batch, or, if that would pass `buffer_bytes`, drop what waits and send
        it back to the store to catch up by itself (the pump never waits for a stream)."""
        if self.waiting_bytes + len(batch.joined) > self.buffer_bytes:
            self.dropped = True
            self.waiting.clear()
            self.waiting_bytes = 0
        else:
            self.waiting.append(batch)
            self.waiting_bytes += len(batch.joined)
        self.wake.set()

    def close(self) -> None:
        """Leave the feed."""
        self.feed._leave(self)


class LiveFeed:
    """Fans stored events out to at most `max_streams` open streams; `notify` is safe from
    any thread and costs nothing while no stream is open."""

    def __init__(
        self,
        read_after: ReadAfter,
        last_position: LastPosition,
        *,
        idle_check_s: float = IDLE_CHECK_S,
        round_interval_s: float = ROUND_INTERVAL_S,
        max_streams: int = DEFAULT_MAX_STREAMS,
        buffer_bytes: int = BUFFER_BYTES,
        max_hold_s: float = MAX_HOLD_S,
    ) -> None:
        self._read_after = read_after
        self._last_position = last_position
        self._idle_check_s = idle_check_s
        self._round_interval_s = round_interval_s
        self.max_streams = max_streams
        self._buffer_bytes = buffer_bytes
        self._max_hold_s = max_hold_s
        self.requests = RequestsInFlight()  # what the server counts in; fan-out waits them out
        self._streams: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None
        self._pump_wake: asyncio.Event | None = None
        self._pump_origin: int | None = None  # where the pump began; None: it is not reading
        self._pump_position = 0
        self._starting: asyncio.Event | None = None  # set when a read that may start it ends
        self._wake_queued = False
        self._closed = False

    @property
    def open_streams(self) -> int:
        """How many streams are open now."""
        return len(self._streams)

    @property
    def pumping(self) -> bool:
        """Whether the pump is reading for streams that trust it (some stream caught up)."""
        return self._pump_origin is not None

    def notify(self) -> None:
        """Events were stored: wake the pump (from any thread). Commits in a burst share one
        wake-up: at most one is queued on the event loop at a time."""
        loop = self._loop
        if self._streams and not self._wake_queued and loop is not None and not loop.is_closed():
            self._wake_queued = True
            try:
                loop.call_soon_threadsafe(self._wake_pump)
            except RuntimeError:  # the loop closed meanwhile
                self._wake_queued = False

    def close(self) -> None:
        """End every stream now (the server is stopping); clients reconnect to the next one."""
        self._closed = True
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake_all)

    async def start_after(self, after: int | None, recent: int) -> int:
        """The position a new stream starts after: `after` when resuming, else `recent` events
        before the newest one."""
        if after is not None:
            return after
        return max(0, await self._last_position() - recent)

    def subscribe(self, after: int) -> Subscription:
        """A place for a stream that starts after position `after`; `TooManyStreams` when
        `max_streams` are open. Close it when the stream ends."""
        if len(self._streams) >= self.max_streams:
            raise TooManyStreams(
                f"the live feed already serves its maximum of {self.max_streams} streams "
                "(MSC_LIVE_FEED_MAX_STREAMS); try again later"
            )
        self._loop = asyncio.get_running_loop()
        subscription = Subscription(self, after, self._buffer_bytes)
        self._streams.add(subscription)
        if self._pump is None:
            self._pump_wake = asyncio.Event()
            self._pump = asyncio.create_task(self._run_pump(), name="live-feed-pump")
        return subscription

    async def stream(self, subscription: Subscription) -> AsyncIterator[bytes]:
        """SSE frames for every event after the subscription's start, then each new one as it
        is stored, until `close()` or the client goes; `id:` is the event's position."""
        position = subscription.after
        # Sending what the pump hands it, rather than reading the store: at once when it starts
        # where the pump is, so a crowd of streams opening at the newest event costs no reads.
        live = self._pump_covers(position)
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            while not self._closed:
                if not live:
                    if self._pump_origin is None and self._starting is not None:
                        # Another stream's read may start the pump: wait for it, then see
                        # whether the pump covers this one too (a crowd opening at once).
                        await self._starting.wait()
                        live = self._pump_covers(position)
                        continue
                    subscription.dropped = False
                    try:
                        page = await self._read_own(position)
                    except DatabaseUnavailable:  # the stream stays open and tries again
                        yield b": database unavailable\n\n"
                        await _woken(subscription.wake, self._idle_check_s)
                        continue
                    if page:
                        position = page[-1].position
                    # Decided before the frames go out, so the pump serves it while they do.
                    live = len(page) < PAGE and self._caught_up(position, subscription)
                    if page:
                        yield b"".join(frame(event) for event in page)
                    continue
                if subscription.dropped:
                    live = False
                    continue
                subscription.wake.clear()
                batches, subscription.waiting = subscription.waiting, []
                subscription.waiting_bytes = 0
                frames = b"".join(batch.after(position) for batch in batches)
                if batches:
                    position = max(position, batches[-1].positions[-1])
                if frames:
                    yield frames
                else:  # the pump wakes it with events, or after IDLE_CHECK_S for a heartbeat
                    await subscription.wake.wait()
                    if not (self._closed or subscription.waiting or subscription.dropped):
                        yield b": idle\n\n"  # also how a vanished client is noticed
        finally:
            subscription.close()

    async def _read_own(self, position: int) -> list[RecordedEvent]:
        """A stream's own read; while no pump runs, the one that may start it, which other
        streams with nothing read yet wait for instead of reading too."""
        if self._pump_origin is not None:
            return await self._read_after(position, PAGE)
        self._starting = starting = asyncio.Event()
        try:
            return await self._read_after(position, PAGE)
        finally:  # the stream decides on `_caught_up` before it next yields: no gap here
            if self._starting is starting:
                self._starting = None
            starting.set()

    def _pump_covers(self, position: int) -> bool:
        """Whether a stream already subscribed gets every event after `position` from the pump
        alone: the pump is reading and has handed out nothing past it, so all it reads from
        here on is fanned out to this stream too."""
        return self._pump_origin is not None and position >= self._pump_position

    def _caught_up(self, position: int, subscription: Subscription) -> bool:
        """Whether a stream whose own read just ended at `position` may trust the pump from
        here; the first such stream starts the pump there."""
        if subscription.dropped:
            return False
        if self._pump_origin is None:
            self._pump_origin = self._pump_position = position
            return True
        return position >= self._pump_origin

    def _leave(self, subscription: Subscription) -> None:
        self._streams.discard(subscription)
        if not self._streams:
            self._pump_origin = None  # the next stream to catch up starts the pump afresh

    def _wake_pump(self) -> None:
        self._wake_queued = False
        if self._pump_wake is not None:
            self._pump_wake.set()

    def _wake_all(self) -> None:
        self._wake_pump()
        for subscription in self._streams:
            subscription.wake.set()

    async def _run_pump(self) -> None:
        """Read each round's new events once and hand them to every stream."""
        assert self._pump_wake is not None
        while not self._closed:
            woken = await _woken(self._pump_wake, self._idle_check_s)
            self._pump_wake.clear()
            if not woken:  # one timer for every stream's heartbeat, not one per stream
                await self._in_slices(lambda subscription: subscription.wake.set())
            origin = self._pump_origin
            if origin is None:
                continue  # no stream is caught up: nobody needs the pump yet
            try:
                page = await self._read_after(self._pump_position, PAGE)
            except DatabaseUnavailable:
                continue  # the pump tries again next round; streams keep their place
            if origin != self._pump_origin:
                continue  # every stream left meanwhile: this page is nobody's
            if page:
                self._pump_position = page[-1].position
                await self._fan_out(_batch_of(page))
            if len(page) == PAGE:
                self._pump_wake.set()  # more to read at once
            elif woken:
                await asyncio.sleep(self._round_interval_s)  # let a burst of commits gather

    async def _fan_out(self, batch: _Batch) -> None:
        await self._in_slices(lambda subscription: subscription.hand(batch))

    async def _in_slices(self, act: Callable[[Subscription], None]) -> None:
        """`act` on every open stream, a slice at a time, the event loop idling `SLICE_PAUSE_S`
        between slices: the streams it woke write, and commands get their turn. A slice waits
        while requests are in flight, so stream writes fill the gaps between answers instead
        of delaying them; the round's later slices stop waiting `max_hold_s` after it began."""
        streams = list(self._streams)
        deadline = asyncio.get_running_loop().time() + self._max_hold_s
        for start in range(0, len(streams), FANOUT_SLICE):
            if start:
                await asyncio.sleep(SLICE_PAUSE_S)
            await self.requests.until_none(deadline)
            for subscription in streams[start : start + FANOUT_SLICE]:
                act(subscription)
        await asyncio.sleep(0)  # the last slice writes before the pump reads again


def _batch_of(events: list[RecordedEvent]) -> _Batch:
    frames = [frame(event) for event in events]
    return _Batch([event.position for event in events], frames, b"".join(frames))


def frame(event: RecordedEvent) -> bytes:
    """One SSE frame: `id:` the position, `data:` the event as `GET /events` shows it."""
    return f"id: {event.position}\ndata: {Event.of(event).model_dump_json()}\n\n".encode()


async def _woken(wake: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)
        return True
    return False
