"""The relay's rounds: where commits wake it, it claims once per wake-up, not once more
right after every round to find the outbox empty."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore
from microservice_connector.eventstore.outbox import IdSpan, OutboxRow, SqlOutbox
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.messaging.memory import InMemoryBroker, InMemoryPublisher
from microservice_connector.messaging.message import PublishResult
from support.relays import running as running_relay
from support.relays import until

AT = datetime(2026, 1, 2, tzinfo=UTC)


class CountingOutbox:
    """The real outbox, counting claims."""

    def __init__(self, outbox: SqlOutbox) -> None:
        self._outbox = outbox
        self.claims = 0
        self.read: list[list[int]] = []  # the ids each claim read

    def rows_to_publish(
        self, relay_id: str, limit: int, lease_seconds: float, skip: Sequence[IdSpan] = ()
    ) -> list[OutboxRow]:
        self.claims += 1
        rows = self._outbox.rows_to_publish(relay_id, limit, lease_seconds, skip)
        self.read.append([row.id for row in rows])
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)


@asynccontextmanager
async def running(relay: OutboxRelay, store: SqlEventStore) -> AsyncIterator[None]:
    """`relay` running while the block runs (`support.relays.running`), then `store` closed."""
    try:
        async with running_relay(relay):
            yield
    finally:
        store.close()


def append(store: SqlEventStore, version: int) -> None:
    event = NewEvent("ItemAdded", ItemAdded("cart-1", "a", 1, AT), AT)
    store.append(AppendRequest("cart-1", "ShoppingCart", version, [event]))


async def test_a_woken_relay_claims_once_per_commit(tmp_path: Path) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    outbox = CountingOutbox(store.outbox)
    relay = OutboxRelay(outbox, InMemoryPublisher(InMemoryBroker()), poll_interval=60)  # type: ignore[arg-type]
    append(store, 0)
    relay.wake()  # as the commit listener does
    async with running(relay, store):
        await until(lambda: relay.published_total == 1, "the first event published")
        append(store, 1)
        relay.wake()
        await until(lambda: relay.published_total == 2, "the second event published")
        assert outbox.claims == 2


async def test_a_relay_woken_from_another_thread_claims_at_once(tmp_path: Path) -> None:
    """A writer thread's commit (PostgreSQL) wakes the relay as a commit on its loop does."""
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    outbox = CountingOutbox(store.outbox)
    relay = OutboxRelay(outbox, InMemoryPublisher(InMemoryBroker()), poll_interval=60)  # type: ignore[arg-type]
    async with running(relay, store):
        await until(lambda: outbox.claims == 1, "the first claim, on start")
        append(store, 0)
        writer = threading.Thread(target=relay.wake)
        writer.start()
        writer.join()
        await until(lambda: relay.published_total == 1, "the event published")
        assert outbox.claims == 2


class CountingPublisher:
    """The in-memory publisher, counting every message handed to it (duplicates too)."""

    def __init__(self) -> None:
        self._publisher = InMemoryPublisher(InMemoryBroker())
        self.sent: list[str] = []

    async def publish(self, messages: Any) -> Any:
        self.sent += [message.id for message in messages]
        return await self._publisher.publish(messages)

    async def close(self) -> None:
        await self._publisher.close()


class HeldMarks:
    """Marks that wait until the test lets them through, then mark the real outbox."""

    def __init__(self, outbox: SqlOutbox) -> None:
        self._outbox = outbox
        self.release = asyncio.Event()
        self.waiting = 0

    async def __call__(self, ids: list[int], sequences: list[int | None]) -> None:
        self.waiting += 1
        await self.release.wait()
        await asyncio.to_thread(self._outbox.mark_published, ids, sequences)
        self.waiting -= 1


async def test_the_next_batch_is_published_while_the_last_is_being_marked(
    tmp_path: Path,
) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    outbox = CountingOutbox(store.outbox)
    publisher = CountingPublisher()
    marks = HeldMarks(store.outbox)
    relay = OutboxRelay(outbox, publisher, poll_interval=60, mark_published=marks)  # type: ignore[arg-type]
    append(store, 0)
    relay.wake()
    async with running(relay, store):
        await until(lambda: marks.waiting == 1, "the first batch waiting for its mark")
        append(store, 1)
        relay.wake()
        await until(lambda: marks.waiting == 2, "the second batch published, the first unmarked")
        assert len(publisher.sent) == 2  # the unmarked first row was not published again
        assert [ids for ids in outbox.read if ids] == [[1], [2]]  # nor even read again
        marks.release.set()
        await until(lambda: marks.waiting == 0, "both marks landed")
        assert store.outbox.pending() == []
    assert len(publisher.sent) == len(set(publisher.sent)) == 2


class FailingOnce(CountingPublisher):
    """Counts messages as `CountingPublisher`, and fails the message of `event_id` once."""

    def __init__(self, event_id: str) -> None:
        super().__init__()
        self._failing = {event_id}

    async def publish(self, messages: Any) -> Any:
        self.sent += [message.id for message in messages]
        passed = [m for m in messages if m.id not in self._failing]
        results = iter(await self._publisher.publish(passed))
        answers = [
            PublishResult(m.id, error="no ack") if m.id in self._failing else next(results)
            for m in messages
        ]
        self._failing.clear()
        return answers


async def test_a_row_the_broker_failed_between_acked_rows_goes_out_once_their_mark_lands(
    tmp_path: Path,
) -> None:
    """The claim skips a mark's rows as one span, failed rows inside it too: they are tried
    again as soon as that mark lands, not at the next poll."""
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    outbox = CountingOutbox(store.outbox)
    for version in range(3):
        append(store, version)
    second = store.outbox.pending()[1].event_id
    publisher = FailingOnce(second)
    marks = HeldMarks(store.outbox)
    relay = OutboxRelay(outbox, publisher, poll_interval=60, mark_published=marks)  # type: ignore[arg-type]
    relay.wake()
    async with running(relay, store):
        await until(lambda: marks.waiting == 1, "rows 1 and 3 waiting for their mark")
        await until(lambda: outbox.claims >= 2, "a claim that skipped the mark's span")
        marks.release.set()
        await until(lambda: publisher.sent.count(second) == 2, "the failed row sent again")
        await until(lambda: store.outbox.pending() == [], "every row marked")


class StaleClaims:
    """The real outbox, whose next claim reads its rows and then waits, so that a mark lands
    between the claim's read and its answer (as on a busy reader thread)."""

    claims_in_microseconds = False  # its claims block: the relay must make them on a thread

    def __init__(self, outbox: SqlOutbox) -> None:
        self._outbox = outbox
        self.hold_next = False
        self.held = threading.Event()
        self.go_on = threading.Event()

    def rows_to_publish(
        self, relay_id: str, limit: int, lease_seconds: float, skip: Sequence[IdSpan] = ()
    ) -> list[OutboxRow]:
        rows = self._outbox.rows_to_publish(relay_id, limit, lease_seconds, skip)
        if self.hold_next:
            self.hold_next = False
            self.held.set()
            self.go_on.wait(10)
        return rows

    def __getattr__(self, name: str) -> Any:
        return getattr(self._outbox, name)


async def test_a_claim_that_read_before_a_mark_landed_does_not_publish_its_rows_again(
    tmp_path: Path,
) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    outbox = StaleClaims(store.outbox)
    publisher = CountingPublisher()
    marks = HeldMarks(store.outbox)
    relay = OutboxRelay(outbox, publisher, poll_interval=60, mark_published=marks)  # type: ignore[arg-type]
    append(store, 0)
    relay.wake()
    async with running(relay, store):
        await until(lambda: marks.waiting == 1, "the first batch waiting for its mark")
        outbox.hold_next = True
        append(store, 1)
        relay.wake()
        await until(outbox.held.is_set, "the second claim read both rows")
        marks.release.set()
        await until(lambda: marks.waiting == 0, "the first mark landed during the claim")
        outbox.go_on.set()
        await until(lambda: len(publisher.sent) >= 2, "the second row published")
        await until(lambda: store.outbox.pending() == [], "every row marked")
    assert len(publisher.sent) == len(set(publisher.sent)) == 2


class WatchingAudit:
    """An audit that notes, at each check, which rows were still unmarked."""

    def __init__(self, outbox: SqlOutbox) -> None:
        self._outbox = outbox
        self.unmarked_at_checks: list[list[int]] = []

    async def check(self) -> list[Any]:
        self.unmarked_at_checks.append([row.id for row in self._outbox.pending()])
        return []

    async def acknowledged(self, stored: Any, round_started: Any) -> list[Any]:
        return []


async def test_the_audit_compares_the_broker_with_the_outbox_only_once_acked_rows_are_marked(
    tmp_path: Path,
) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    marks = HeldMarks(store.outbox)
    audit = WatchingAudit(store.outbox)
    relay = OutboxRelay(
        store.outbox,
        CountingPublisher(),  # type: ignore[arg-type]
        poll_interval=60,
        mark_published=marks,
        audit=audit,  # type: ignore[arg-type]
        audit_interval=0.01,
    )
    async with running(relay, store):
        await until(lambda: len(audit.unmarked_at_checks) >= 1, "the check at start")
        append(store, 0)
        relay.wake()
        await until(lambda: marks.waiting == 1, "the row acked, its mark held")
        checks = len(audit.unmarked_at_checks)
        marks.release.set()
        await until(lambda: len(audit.unmarked_at_checks) > checks + 1, "checks after the mark")
    assert all(unmarked == [] for unmarked in audit.unmarked_at_checks)


async def test_a_backlog_drains_in_batches_while_earlier_batches_wait_for_their_marks(
    tmp_path: Path,
) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    for version in range(6):
        append(store, version)
    publisher = CountingPublisher()
    marks = HeldMarks(store.outbox)
    relay = OutboxRelay(
        store.outbox,
        publisher,  # type: ignore[arg-type]
        batch_size=2,
        poll_interval=60,
        mark_published=marks,
    )
    relay.wake()
    async with running(relay, store):
        # No commit wakes it again: it reads past the rows waiting for their marks.
        await until(lambda: marks.waiting == 3, "three batches of two, their marks held")
        assert len(publisher.sent) == len(set(publisher.sent)) == 6
        marks.release.set()
        await until(lambda: marks.waiting == 0, "every mark landed")
        assert store.outbox.pending() == []
    assert len(publisher.sent) == 6
