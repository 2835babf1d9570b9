"""Group commit: concurrent appends from asyncio share one transaction on a writer thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.eventstore.errors import DatabaseUnavailable, WriterStopped
from microservice_connector.eventstore.port import AppendRequest, AppendResult, EventStore
from microservice_connector.eventstore.snapshot import Snapshot, SnapshotStore
from microservice_connector.eventstore.writer_health import WriterHealth

_Pending = tuple[AppendRequest, "asyncio.Future[list[RecordedEvent]]"]
_Outcome = AppendResult | BaseException
_Answer = tuple["asyncio.Future[Any]", _Outcome | None]
_STOP = object()
# With `commit_on_loop`, a group waits up to this many more passes of the event loop while
# each pass adds to it: under load, requests read in the passes after the first join it, and
# one fsync serves about twice as many commands; with one command alone it costs one pass.
SETTLE_PASSES = 3
_T = TypeVar("_T")
log = logging.getLogger(__name__)


class PublishedMarker(Protocol):
    """The outbox's marker: records that the broker acknowledged rows (`SqlOutbox`)."""

    def mark_published(
        self, ids: Sequence[int], sequences: Sequence[int | None] | None = None
    ) -> None:
        """Mark the rows `ids` published, with the broker's `sequences` when known."""
        ...


@dataclass(frozen=True, slots=True)
class _Mark:
    outbox_ids: list[int]
    sequences: list[int | None]
    future: asyncio.Future[Any]


@dataclass(frozen=True, slots=True)
class _Save:
    snapshot: Snapshot
    future: asyncio.Future[Any]


class GroupCommitStore:
    """An async face on an `EventStore`: appends waiting together commit together.

    Each append succeeds or fails on its own: on its expected version, and on its own data
    (an event that does not encode, a value the database refuses fails that append only).
    A caller is answered only after the commit that holds its events. If the writer thread
    stops, waiting and later appends get `WriterStopped` at once and `ping` says why; while
    commits fail (database down, disk full) and until one succeeds, `ping` says that.
    Reads run on worker threads.

    With `commit_on_loop` (for a local SQLite file) there is no writer thread: what the event
    loop submits commits together on the loop's own thread: a group waits one more pass of
    the loop, and another while each pass adds to it, up to `SETTLE_PASSES`. A commit
    there blocks the loop for as long as it takes (about 0.2-0.3 ms with its fsync on this
    project's machine), but saves the two thread hand-offs per commit, which cost more than
    the commit on a busy machine.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        outbox: PublishedMarker | None = None,
        snapshots: SnapshotStore | None = None,
        max_batch: int = 256,
        commit_on_loop: bool = False,
    ) -> None:
        self.store = store
        self._outbox = outbox
        self._snapshots = snapshots
        self._max_batch = max_batch
        self._commit_on_loop = commit_on_loop
        self._on_loop: list[Any] = []  # submitted on the loop since its last commit
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        # Held while an item is queued and while the writer declares itself stopped, so
        # nothing is queued after the writer's last look at the queue.
        self._accepting = threading.Lock()
        self._health = WriterHealth()
        self._commit_listeners: list[Callable[[], None]] = []

    def on_commit(self, listener: Callable[[], None]) -> None:
        """Call `listener` (on the thread that committed: the writer's, or the event loop's
        with `commit_on_loop`) after every commit that stored events; one that raises is
        logged and does not stop the writer."""
        self._commit_listeners.append(listener)

    async def append(self, request: AppendRequest) -> list[RecordedEvent]:
        """Append through the next group commit; raises `ConcurrencyError` on a stale version,
        `DatabaseUnavailable` (`WriterStopped` included) or `DataRejected`."""
        future: asyncio.Future[list[RecordedEvent]] = asyncio.get_running_loop().create_future()
        self._submit((request, future))
        return await future

    async def mark_published(
        self, outbox_ids: Sequence[int], sequences: Sequence[int | None] | None = None
    ) -> None:
        """Mark outbox rows published (with the broker's `sequences` when known), on the
        writer thread right after its next commit, so the relay never waits for the
        writer's connection. `LookupError` if this store was given no outbox."""
        if self._outbox is None:
            raise LookupError("this GroupCommitStore has no outbox to mark: pass outbox=")
        if not outbox_ids:
            return
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        known: list[int | None] = [None] * len(outbox_ids) if sequences is None else [*sequences]
        self._submit(_Mark(list(outbox_ids), known, future))
        await future

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Save `snapshot` (into `snapshots`) by the writer right after its next commit, with
        the other snapshots due then, in a commit that does not wait for the disk: it neither
        waits for the writer's connection nor holds it through an fsync. Raises what the save
        raised; `LookupError` if this store was given no `snapshots`."""
        if self._snapshots is None:
            raise LookupError("this GroupCommitStore saves no snapshots: pass snapshots=")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._submit(_Save(snapshot, future))
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
        """Raise `DatabaseUnavailable` unless the store answers and takes writes: naming the
        writer if it stopped, or if its last commit failed and none has succeeded since."""
        self._health.check()
        await asyncio.to_thread(self.store.ping)

    def close(self) -> None:
        """Finish the appends already queued, stop the writer and close the store."""
        with self._accepting:
            left, self._on_loop = self._on_loop, []
        if left:
            self._write(left)
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join()
        self.store.close()

    def _submit(self, item: _Pending | _Mark | _Save) -> None:
        with self._accepting:
            self._health.refuse_if_stopped()
            if self._commit_on_loop:
                self._on_loop.append(item)
                if len(self._on_loop) == 1:  # the first of a group: commit once it settles
                    asyncio.get_running_loop().call_soon(self._commit_when_settled, 0, 0)
                return
            self._ensure_writer()
            self._queue.put(item)

    def _commit_when_settled(self, seen: int, passes: int) -> None:
        """Commit what the loop submitted, unless it grew past `seen` since the last look
        and may wait another pass: then look again after the next one."""
        size = len(self._on_loop)
        if size > seen and passes < SETTLE_PASSES and size < self._max_batch:
            asyncio.get_running_loop().call_soon(self._commit_when_settled, size, passes + 1)
            return
        self._commit_here()

    def _commit_here(self) -> None:
        """Commit, on the event loop's thread, what was submitted since the last time."""
        with self._accepting:
            in_hand, self._on_loop = self._on_loop, []
        try:
            self._write(in_hand)
        except BaseException as exc:  # as for the writer thread: refuse from now on
            self._stop(exc, in_hand)
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise

    def _ensure_writer(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._write_loop, name="event-store-writer", daemon=True
                    )
                    self._thread.start()

    def _write_loop(self) -> None:
        in_hand: list[Any] = []
        try:
            while True:
                in_hand, stop = self._take_group()
                self._write(in_hand)
                in_hand = []
                if stop:
                    return
        except BaseException as exc:  # whatever it was, no caller may wait for this thread
            self._stop(exc, in_hand)

    def _write(self, in_hand: Sequence[Any]) -> None:
        """Commit the appends in hand together, then mark the outbox rows in hand, then save
        the snapshots in hand."""
        batch = [item for item in in_hand if not isinstance(item, _Mark | _Save)]
        if batch:
            self._commit(batch)
        marks = [item for item in in_hand if isinstance(item, _Mark)]
        if marks:
            self._mark(marks)
        saves = [item for item in in_hand if isinstance(item, _Save)]
        if saves:
            self._save(saves)

    def _stop(self, exc: BaseException, in_hand: Sequence[Any]) -> None:
        """The writer failed in a way of its own: refuse from now on, then answer `in_hand`
        and whatever was submitted before the refusal."""
        log.critical("event store writer stopped", exc_info=exc)
        with self._accepting:
            self._health.stop(f"{type(exc).__name__}: {exc}")
            left, self._on_loop = self._on_loop, []
        stopped = WriterStopped(f"event store writer stopped: {type(exc).__name__}: {exc}")
        _answer([*in_hand, *left, *_drain(self._queue)], stopped)

    def _take_group(self) -> tuple[list[Any], bool]:
        """The next items to write together (at least one, waiting for it), and whether a
        stop came after them."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        items: list[Any] = [first]
        while len(items) < self._max_batch:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                return items, True
            items.append(item)
        return items, False

    def _commit(self, batch: Sequence[_Pending]) -> None:
        outcomes = self._outcomes([request for request, _ in batch])
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, outcome))
        for loop, settled in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: its callers are gone
                loop.call_soon_threadsafe(_settle, settled)
        if any(isinstance(outcome, list) and outcome for outcome in outcomes):
            self._notify()

    def _outcomes(self, requests: Sequence[AppendRequest]) -> list[_Outcome]:
        """Each request's outcome, from one commit when all goes well. When the commit fails
        for a reason of its own (an event that does not encode, data the database refuses),
        nothing was written: each half is committed again, so that only the bad request
        fails. When the database fails, every request hears why."""
        try:
            results: list[_Outcome] = [*self.store.append_batch(requests)]
        except DatabaseUnavailable as exc:
            self._health.commit_failed(str(exc))
            return [exc] * len(requests)
        except Exception as exc:
            if len(requests) == 1:
                return [exc]
            middle = len(requests) // 2
            return self._outcomes(requests[:middle]) + self._outcomes(requests[middle:])
        self._health.committed()
        return results

    def _notify(self) -> None:
        for listener in self._commit_listeners:
            try:
                listener()
            except Exception:  # a listener's bug must not stop the commits of everyone else
                log.exception("commit listener %r failed; the writer goes on", listener)

    def _mark(self, marks: Sequence[_Mark]) -> None:
        outbox = self._outbox
        assert outbox is not None, "mark_published takes no marks without an outbox"
        ids = [row for mark in marks for row in mark.outbox_ids]
        sequences = [sequence for mark in marks for sequence in mark.sequences]
        # One that fails leaves its rows pending: they are published again.
        _answer_after(marks, lambda: outbox.mark_published(ids, sequences))

    def _save(self, saves: Sequence[_Save]) -> None:
        snapshots = self._snapshots
        assert snapshots is not None, "save_snapshot takes none without snapshots="
        _answer_after(saves, lambda: snapshots.save_snapshots([save.snapshot for save in saves]))


def _answer_after(items: Sequence[_Mark | _Save], work: Callable[[], None]) -> None:
    """Do `work` for `items`, then answer their callers: done, or what it raised."""
    outcome: BaseException | None = None
    try:
        work()
    except Exception as exc:
        outcome = exc
    _answer(items, outcome)


def _drain(items: queue.SimpleQueue[Any]) -> list[Any]:
    drained = []
    with contextlib.suppress(queue.Empty):
        while True:
            drained.append(items.get_nowait())
    return drained


def _answer(items: Sequence[Any], outcome: BaseException | None) -> None:
    """Answer the callers of `items` (appends, marks, saves) with `outcome` (None: done); an
    append already answered keeps its answer."""
    for item in items:
        if item is _STOP:
            continue
        future: asyncio.Future[Any] = item.future if isinstance(item, _Mark | _Save) else item[1]
        answer: list[_Answer] = [(future, outcome)]
        with contextlib.suppress(RuntimeError):  # a closed loop: its caller is gone
            future.get_loop().call_soon_threadsafe(_settle, answer)


def _settle(settled: list[_Answer]) -> None:
    for future, outcome in settled:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
