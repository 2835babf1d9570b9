"""Group commit: concurrent appends from asyncio share one transaction on a writer thread."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import ConcurrencyError
from microservice_connector.eventstore.port import AppendRequest, AppendResult, EventStore

_Pending = tuple[AppendRequest, "asyncio.Future[list[RecordedEvent]]"]
_STOP = object()
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Mark:
    outbox_ids: list[int]
    sequences: list[int | None]
    future: asyncio.Future[Any]


class GroupCommitStore:
    """An async face on an `EventStore`: appends waiting together commit together.

    Each append still succeeds or fails on its own expected version; a caller is answered
    only after the commit that holds its events. Reads run on worker threads.
    """

    def __init__(self, store: EventStore, *, max_batch: int = 256) -> None:
        self.store = store
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._commit_listeners: list[Callable[[], None]] = []

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the writer thread) after every commit that stored events."""
        self._commit_listeners.append(listener)

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Append through the next group commit; raises `ConcurrencyError` on a stale version."""
        self._ensure_writer()
        future: asyncio.Future[list[RecordedEvent]] = asyncio.get_running_loop().create_future()
        self._queue.put((request, future))
        return await future

    async def mark_published(
        self, outbox_ids: Sequence[int], sequences: Sequence[int | None] | None = None
    ) -> None:
        """Mark outbox rows published (with the broker's `sequences` when known), on the
        writer thread right after its next commit, so the relay never waits for the
        writer's connection. A no-op for a store without one."""
        if not outbox_ids:
            return
        self._ensure_writer()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        known: list[int | None] = [None] * len(outbox_ids) if sequences is None else [*sequences]
        self._queue.put(_Mark(list(outbox_ids), known, future))
        await future

    async def load(
        self, aggregate_id: str, after_version: int = 0, to_version: int | None = None
    ) -> list[RecordedEvent]:
        """The aggregate's events in the version range, read on a worker thread."""
        return await asyncio.to_thread(self.store.load, aggregate_id, after_version, to_version)

    async def read_all(self, after_position: int = 0, limit: int = 100) -> list[RecordedEvent]:
        """The global feed after `after_position`, read on a worker thread."""
        return await asyncio.to_thread(self.store.read_all, after_position, limit)

    async def read(self, work: Callable[[EventStore], _T]) -> _T:
        """`work(self.store)` on a worker thread: several reads for one hand-off."""
        return await asyncio.to_thread(work, self.store)

    async def ping(self) -> None:
        """Raise `DatabaseUnavailable` unless the store answers."""
        await asyncio.to_thread(self.store.ping)

    def close(self) -> None:
        """Finish the appends already queued, stop the writer and close the store."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        self.store.close()

    def _ensure_writer(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._write_loop, name="event-store-writer", daemon=True
                    )
                    self._thread.start()

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            items: list[Any] = [first]
            stop = False
            while len(items) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                items.append(item)
            batch = [item for item in items if not isinstance(item, _Mark)]
            if batch:
                self._commit(batch)
            marks = [item for item in items if isinstance(item, _Mark)]
            if marks:
                self._mark(marks)
            if stop:
                return

    def _mark(self, marks: Sequence[_Mark]) -> None:
        outbox = getattr(self.store, "outbox", None)
        outcome: Any = None
        try:
            if outbox is not None:
                outbox.mark_published(
                    [row for mark in marks for row in mark.outbox_ids],
                    [sequence for mark in marks for sequence in mark.sequences],
                )
        except Exception as exc:  # the rows stay pending and are published again
            outcome = exc
        for mark in marks:
            with contextlib.suppress(RuntimeError):
                mark.future.get_loop().call_soon_threadsafe(_settle, [(mark.future, outcome)])

    def _commit(self, batch: Sequence[_Pending]) -> None:
        outcomes: Sequence[AppendResult | BaseException]
        try:
            outcomes = self.store.append_batch([request for request, _ in batch])
        except Exception as exc:  # the whole commit failed: every caller hears why
            outcomes = [exc] * len(batch)
        else:
            if any(isinstance(outcome, list) and outcome for outcome in outcomes):
                for listener in self._commit_listeners:
                    listener()
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any]]] = {}
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, outcome))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its callers are gone
                loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[list[RecordedEvent]], Any]]) -> None:
    for future, outcome in settled:
        if future.done():
            continue
        if isinstance(outcome, (ConcurrencyError, BaseException)):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
