"""The outbox relay: publishes pending outbox rows and marks them only once the broker acks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from microservice_connector.eventstore.broker_audit import BrokerAudit
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.held_back import HeldBack
from microservice_connector.eventstore.marks_in_flight import MarksInFlight
from microservice_connector.eventstore.outbox import OutboxRow, SqlOutbox
from microservice_connector.instance import default_instance_id
from microservice_connector.messaging.message import Message, PublishResult
from microservice_connector.messaging.ports import Publisher
from microservice_connector.tracing.messaging import publish_spans

log = logging.getLogger(__name__)
FLUSH_S = 3.0
DEFAULT_LEASE_S = 15.0
DEFAULT_AUDIT_INTERVAL_S = 10.0
MARKS_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class RelayRound:
    """What one round did: rows published (acked and marked) and rows that failed, of which
    `refused` failed for themselves (too large for the broker, a header it cannot carry)
    and are held back."""

    published: int
    failed: int
    refused: int = 0

    @property
    def tried(self) -> int:
        """How many rows the round published or failed to publish; fewer than a batch means
        nothing more was pending at its claim."""
        return self.published + self.failed

    @property
    def broker_failed(self) -> bool:
        """Whether a row failed for a reason not its own (the broker, the connection): the
        relay then backs off, as the next round would most likely fail the same way."""
        return self.failed > self.refused


class RelayObserver(Protocol):
    """Told what each round did; metrics implement it. Must be cheap and must not raise."""

    def round_finished(self, published: int, failed: int, publish_seconds: float) -> None:
        """A round published `published` rows and failed `failed`, the broker answering all
        of them within `publish_seconds`."""
        ...


class OutboxRelay:
    """Publishes outbox rows oldest first, a batch in flight at a time; a crash between publish
    and mark republishes, and the broker (`Nats-Msg-Id`) or the consumer drops the duplicate.
    While it runs, the next batch is published while the last one is being marked (at most
    `MARKS_IN_FLIGHT` batches wait for their marks); `relay_once` marks before it returns.

    It wakes on `wake()` (called right after a commit) or every `poll_interval` seconds, and
    backs off exponentially while the broker or the database is unavailable. A row the broker
    refuses for itself (`PublishResult.refused`) does not slow the others: it is held back,
    neither read nor leased until it is tried again after a delay that doubles up to 5 min,
    and logged at ERROR each time. Relays sharing a
    PostgreSQL outbox claim rows under their `relay_id` for `lease_seconds`
    (`SqlOutbox.rows_to_publish`): when one dies, another publishes its rows within
    `lease_seconds + poll_interval`.

    With an `audit`, it checks at start and every `audit_interval` seconds that the broker
    still holds what it acknowledged, and publishes again what it lost (`BrokerAudit`).
    """

    def __init__(
        self,
        outbox: SqlOutbox,
        publisher: Publisher,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        max_backoff: float = 5.0,
        observer: RelayObserver | None = None,
        mark_published: Callable[[list[int], list[int | None]], Awaitable[None]] | None = None,
        relay_id: str | None = None,
        lease_seconds: float = DEFAULT_LEASE_S,
        audit: BrokerAudit | None = None,
        audit_interval: float = DEFAULT_AUDIT_INTERVAL_S,
    ) -> None:
        self.relay_id = relay_id or default_instance_id()
        self._lease_seconds = lease_seconds
        self._outbox = outbox
        self._publisher = publisher
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._max_backoff = max_backoff
        self._observer = observer
        self._mark_published = mark_published or self._mark_on_a_thread
        self._audit = audit
        self._audit_interval = audit_interval
        self._wake = asyncio.Event()
        self._marking: set[asyncio.Task[None]] = set()
        self._in_flight = MarksInFlight()  # rows not to claim again while marks land
        self._held_back = HeldBack()  # rows the broker refused, until their next try
        self._woken_by_commits = False  # set by the first `wake()`: commits call it
        self._loop: asyncio.AbstractEventLoop | None = None
        self.published_total = 0
        self.failed_total = 0

    def wake(self) -> None:
        """Ask for a round now; safe to call from any thread. On the relay's own event
        loop (a commit there), the round is due on the loop's next pass."""
        self._woken_by_commits = True
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if _running_loop() is loop:
            self._wake.set()
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; then flush what is pending for up to `FLUSH_S` seconds
        (what is not acked by then stays pending, its leases released for other relays)."""
        self._loop = asyncio.get_running_loop()
        auditing = None
        if self._audit is not None:
            await self._audit_once()  # before publishing: a new log would hide what it lost
            auditing = asyncio.create_task(self._audit_every(stop))
        try:
            await self._relay_until(stop)
        finally:
            if auditing is not None:
                auditing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await auditing

    async def _relay_until(self, stop: asyncio.Event) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        stopping.add_done_callback(lambda _: self._wake.set())  # a stop ends any wait for work
        try:
            await self._relay_while(stop)
        finally:
            stopping.cancel()

    async def _relay_while(self, stop: asyncio.Event) -> None:
        backoff = 0.0
        while not stop.is_set():
            self._wake.clear()
            try:
                round_ = await self._publish_round()
            except DatabaseUnavailable as exc:
                log.warning("outbox relay: %s", exc)
                round_ = RelayRound(published=0, failed=1)
            if round_.broker_failed:
                backoff = min(self._max_backoff, max(0.05, backoff * 2))
                await _wait(stop, backoff)
            elif round_.tried == 0 or (self._woken_by_commits and round_.tried < self._batch_size):
                # Nothing more was pending at the claim; where every commit since set
                # `_wake` (cleared before the claim), claiming again at once finds nothing.
                backoff = 0.0
                await _wait(self._wake, self._poll_interval)  # set by commits, audit, stop
            else:
                backoff = 0.0
        await self._flush()
        with contextlib.suppress(DatabaseUnavailable):
            await asyncio.to_thread(self._outbox.release, self.relay_id)

    async def _audit_every(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _wait(stop, self._audit_interval)
            if not stop.is_set():
                await self._audit_once()

    async def _audit_once(self) -> None:
        assert self._audit is not None
        if landing := set(self._marking):
            # What the broker acknowledged must be marked before the audit compares the
            # broker with the outbox, or rows it lost meanwhile would look never published.
            await asyncio.wait(landing)
        try:
            if await self._audit.check():
                self._wake.set()  # re-armed rows are pending: publish them now
        except (ConnectionError, DatabaseUnavailable) as exc:
            log.warning("broker audit: %s; trying again in %g s", exc, self._audit_interval)
        except Exception:  # the audit must never stop the relay
            log.exception("broker audit failed; trying again in %g s", self._audit_interval)

    async def _flush(self) -> None:
        with contextlib.suppress(TimeoutError, DatabaseUnavailable):
            async with asyncio.timeout(FLUSH_S):  # what is not marked by then stays pending
                while (await self.relay_once()).published:
                    pass
                await self._marks_landed()

    async def _mark_on_a_thread(self, ids: list[int], sequences: list[int | None]) -> None:
        await asyncio.to_thread(self._outbox.mark_published, ids, sequences)

    async def relay_once(self) -> RelayRound:
        """Publish one batch of pending rows (claimed, where relays share the outbox); mark
        those the broker acknowledged before returning."""
        await self._marks_landed()
        return await self._publish_round(pipelined=False)

    async def _publish_round(self, *, pipelined: bool = True) -> RelayRound:
        """Publish one batch of the pending rows not already waiting for their mark, and start
        marking those the broker acknowledged; with `MARKS_IN_FLIGHT` batches still being
        marked, wait for the oldest first."""
        while len(self._marking) >= MARKS_IN_FLIGHT:
            await asyncio.wait(self._marking, return_when=asyncio.FIRST_COMPLETED)
        seen = self._in_flight.begin_claim()
        # Neither the rows waiting for their marks nor those held back are read.
        held = [(row_id, row_id) for row_id in self._held_back.now_held()]
        skip = [*self._in_flight.spans_on_the_way(), *held]
        claim = (self.relay_id, self._batch_size, self._lease_seconds, skip)
        if self._outbox.claims_in_microseconds:
            claimed = self._outbox.rows_to_publish(*claim)  # two thread hops cost more
        else:
            claimed = await asyncio.to_thread(self._outbox.rows_to_publish, *claim)
        claimable = set(self._in_flight.claimable((row.id for row in claimed), seen))
        rows = [row for row in claimed if row.id in claimable][: self._batch_size]
        if not rows:
            return RelayRound(0, 0)
        started, started_at = time.perf_counter(), datetime.now(UTC)
        spans = publish_spans([_message(row) for row in rows])  # inert unless tracing is on
        results = await self._publisher.publish(spans.messages)
        spans.end(results)
        publish_seconds = time.perf_counter() - started
        acked = [
            (row.id, result.sequence)
            for row, result in zip(rows, results, strict=True)
            if result.acknowledged
        ]
        failed = [
            (row, result)
            for row, result in zip(rows, results, strict=True)
            if not result.acknowledged
        ]
        if acked:
            marked = _Acknowledged(
                [row_id for row_id, _ in acked],
                [sequence for _, sequence in acked],
                _stored_anew(rows, results),
                started_at,
            )
            if pipelined:
                self._start_marking(marked)
            else:
                await self._mark_and_audit(marked)
        refused = [(row, result) for row, result in failed if result.refused]
        if refused:
            await self._hold_back(refused)
        if unexplained := [(row, result) for row, result in failed if not result.refused]:
            error = _first_error(unexplained)
            log.warning("outbox relay: %d of %d not acked: %s", len(unexplained), len(rows), error)
            ids = [row.id for row, _ in unexplained]
            await asyncio.to_thread(self._outbox.record_failure, ids, error)
        self.published_total += len(acked)
        self.failed_total += len(failed)
        if self._observer is not None:
            self._observer.round_finished(len(acked), len(failed), publish_seconds)
        return RelayRound(len(acked), len(failed), len(refused))

    async def _hold_back(self, refused: list[tuple[OutboxRow, PublishResult]]) -> None:
        """Record each refusal on its row and hold the row back; the rows after it go on."""
        for row, result in refused:
            error = result.error or "refused"
            await asyncio.to_thread(self._outbox.record_failure, [row.id], error)
            wait = self._held_back.hold(row.id, row.attempts + 1)
            log.error(
                "outbox relay: the broker refused event %s (%s, outbox row %d, attempt %d): %s;"
                " the rows after it go on, and it is tried again in %g s",
                row.event_id,
                row.topic,
                row.id,
                row.attempts + 1,
                error,
                wait,
            )

    def _start_marking(self, acked: _Acknowledged) -> None:
        self._in_flight.started(acked.ids)
        self._marking.add(marking := asyncio.create_task(self._mark(acked)))
        marking.add_done_callback(self._marking.discard)

    async def _mark(self, acked: _Acknowledged) -> None:
        """`_mark_and_audit` in the background. A mark that fails leaves its rows pending:
        they are published again (and the broker or the consumer drops the duplicate)."""
        count = len(acked.ids)
        try:
            await self._mark_and_audit(acked)
        except DatabaseUnavailable as exc:
            log.warning("outbox relay: marking %d rows failed, to publish again: %s", count, exc)
            self._wake.set()
        except Exception:
            log.exception("outbox relay: marking %d rows failed, to publish again", count)
            self._wake.set()
        finally:
            self._in_flight.landed(acked.ids)
            if max(acked.ids) - min(acked.ids) + 1 != count:
                self._wake.set()  # rows between them (the broker failed them) waited for this

    async def _mark_and_audit(self, acked: _Acknowledged) -> None:
        """Mark acked rows, then let the audit look at what the broker stored anew."""
        await self._mark_published(acked.ids, acked.sequences)
        if self._audit is not None and await self._audit.acknowledged(acked.stored, acked.at):
            self._wake.set()  # re-armed rows are pending: publish them now

    async def _marks_landed(self) -> None:
        """Wait until every mark started so far has landed or failed."""
        while self._marking:
            await asyncio.wait(self._marking)


@dataclass(frozen=True, slots=True)
class _Acknowledged:
    """What the broker acknowledged of a round: the rows' ids and broker sequences, and the
    (topic, sequence) of what it stored anew, for the audit, in a round begun `at`."""

    ids: list[int]
    sequences: list[int | None]
    stored: list[tuple[str, int]]
    at: datetime


def _message(row: OutboxRow) -> Message:
    return Message(
        id=row.event_id, topic=row.topic, payload=row.payload, headers=row.headers, key=row.key
    )


def _stored_anew(rows: list[OutboxRow], results: list[PublishResult]) -> list[tuple[str, int]]:
    """The topic and sequence of each message the broker stored now, not as a duplicate."""
    return [
        (row.topic, result.sequence)
        for row, result in zip(rows, results, strict=True)
        if result.acknowledged and result.sequence is not None and not result.duplicate
    ]


def _first_error(failed: list[tuple[OutboxRow, PublishResult]]) -> str:
    return failed[0][1].error or "not acknowledged"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running on this thread, if any."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _wait(event: asyncio.Event, seconds: float) -> None:
    """Until `event` is set or `seconds` passed."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
