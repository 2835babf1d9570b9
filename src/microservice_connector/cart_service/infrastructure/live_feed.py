"""The live feed behind `GET /events/stream`: server-sent events, woken by the store's commits.

Each stream reads what is new from the event store itself, after the last position it sent.
So a slow client costs no memory (it falls behind in the database, not in a buffer), a
reconnecting one resumes exactly where it left off (`Last-Event-ID`), and nothing polls the
database while the store is quiet except one slow check for writers in other processes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from microservice_connector.cart_service.infrastructure.schemas import Event
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import DatabaseUnavailable

ReadAfter = Callable[[int, int], Awaitable[list[RecordedEvent]]]
LastPosition = Callable[[], Awaitable[int]]

PAGE = 200
MIN_READ_INTERVAL_S = 0.05  # at most 20 reads a second per stream, however busy the store
IDLE_CHECK_S = 2.0  # how soon other processes' events show up; a quiet stream's heartbeat
RETRY_MS = 1000


class LiveFeed:
    """Wakes every open stream when events were stored; `notify` is safe from any thread and
    costs nothing while no stream is open."""

    def __init__(
        self,
        read_after: ReadAfter,
        last_position: LastPosition,
        *,
        idle_check_s: float = IDLE_CHECK_S,
    ) -> None:
        self._read_after = read_after
        self._last_position = last_position
        self._idle_check_s = idle_check_s
        self._wakers: set[asyncio.Event] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._wake_queued = False

    @property
    def open_streams(self) -> int:
        """How many clients are connected now."""
        return len(self._wakers)

    def notify(self) -> None:
        """Events were stored: wake the open streams (from any thread). Commits in a burst
        share one wake-up: at most one is queued on the event loop at a time."""
        loop = self._loop
        if self._wakers and not self._wake_queued and loop is not None and not loop.is_closed():
            self._wake_queued = True
            try:
                loop.call_soon_threadsafe(self._wake_all)
            except RuntimeError:  # the loop closed meanwhile
                self._wake_queued = False

    def close(self) -> None:
        """End every stream now (the server is stopping); clients reconnect to the next one."""
        self._closed = True
        self.notify()

    async def start_after(self, after: int | None, recent: int) -> int:
        """The position a new stream starts after: `after` when resuming, else `recent` events
        before the newest one."""
        if after is not None:
            return after
        return max(0, await self._last_position() - recent)

    async def stream(self, after: int) -> AsyncIterator[bytes]:
        """SSE frames for every event after `after`, then each new one as it is stored, until
        `close()` or the client goes (a send fails: the server ends the generator); `id:` is
        the event's position."""
        self._loop = asyncio.get_running_loop()
        waker = asyncio.Event()
        self._wakers.add(waker)
        try:
            yield f"retry: {RETRY_MS}\n\n".encode()
            position = after
            while not self._closed:
                waker.clear()
                try:
                    page = await self._read_after(position, PAGE)
                except DatabaseUnavailable:  # the stream stays open and tries again
                    yield b": database unavailable\n\n"
                    await asyncio.sleep(self._idle_check_s)
                    continue
                for event in page:
                    yield frame(event)
                    position = event.position
                if len(page) == PAGE:
                    continue  # catching up: read on without waiting
                if await _woken(waker, self._idle_check_s):
                    await asyncio.sleep(MIN_READ_INTERVAL_S)  # let a burst of commits gather
                else:
                    yield b": idle\n\n"  # also how a vanished client is noticed
        finally:
            self._wakers.discard(waker)

    def _wake_all(self) -> None:
        self._wake_queued = False
        for waker in self._wakers:
            waker.set()


def frame(event: RecordedEvent) -> bytes:
    """One SSE frame: `id:` the position, `data:` the event as `GET /events` shows it."""
    return f"id: {event.position}\ndata: {Event.of(event).model_dump_json()}\n\n".encode()


async def _woken(waker: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(waker.wait(), seconds)
        return True
    return False
