"""Several relays on one PostgreSQL outbox: each row published by one of them, and a dead
relay's rows published by another once its lease runs out."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table, insert, select
from sqlalchemy.engine import make_url

from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, SqlEventStore
from microservice_connector.eventstore.engine import make_engine
from microservice_connector.eventstore.relay import OutboxRelay
from microservice_connector.eventstore.schema import outbox
from microservice_connector.messaging.message import Message, PublishResult
from support.processes import wait_for

NOW = datetime(2026, 11, 25, tzinfo=UTC)
DEADLINE_S = 30.0


class RecordingPublisher:
    """Acknowledges every message and remembers which ids it published."""

    def __init__(self) -> None:
        self.published: list[str] = []

    async def publish(self, messages: Sequence[Message]) -> list[PublishResult]:
        await asyncio.sleep(0)  # let the other relay run between batches
        self.published += [message.id for message in messages]
        return [PublishResult(message.id, sequence=1) for message in messages]

    async def close(self) -> None:
        return None


@pytest.fixture
def stores(postgres_url: str) -> Iterator[tuple[SqlEventStore, SqlEventStore]]:
    """Two stores on one PostgreSQL database, as two cart instances have."""
    first, second = SqlEventStore(postgres_url), SqlEventStore(postgres_url)
    yield first, second
    first.close()
    second.close()


def fill(store: SqlEventStore, carts: int, prefix: str = "cart") -> list[str]:
    """Append one event to each of `carts` carts; their event ids."""
    ids: list[str] = []
    for n in range(carts):
        cart = f"{prefix}-{n}"
        event = NewEvent("ItemAdded", ItemAdded(cart, "item-001", 1, NOW), NOW)
        [recorded] = store.append(AppendRequest(cart, "ShoppingCart", 0, [event]))
        ids.append(recorded.event_id)
    return ids


def unpublished(store: SqlEventStore) -> int:
    return store.outbox.status().pending


async def relay_until(relays: Sequence[OutboxRelay], done: Callable[[], bool]) -> None:
    """Run `relays` until `done()` holds; fail after `DEADLINE_S`."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        await asyncio.to_thread(wait_for, done, DEADLINE_S, "every outbox row published")
    finally:
        stop.set()
        await asyncio.gather(*tasks)


async def test_two_relays_publish_every_row_once_and_mark_it(
    stores: tuple[SqlEventStore, SqlEventStore],
) -> None:
    first, second = stores
    ids = fill(first, 150, "a") + fill(second, 150, "b")
    publishers = [RecordingPublisher(), RecordingPublisher()]
    relays = [
        OutboxRelay(store.outbox, publisher, batch_size=10, relay_id=name, poll_interval=0.05)
        for store, publisher, name in zip(stores, publishers, ("relay-1", "relay-2"), strict=True)
    ]
    await relay_until(relays, lambda: unpublished(first) == 0)

    published = Counter(publishers[0].published + publishers[1].published)
    assert set(published) == set(ids)
    assert max(published.values()) == 1, "a row was published by both relays"
    assert first.outbox.status().published == len(ids)
    with first.writer.connect() as connection:
        holders = set(connection.execute(select(outbox.c.claimed_by)).scalars())
    assert holders <= {"relay-1", "relay-2"}


def test_a_relay_skips_rows_another_holds_and_gets_its_own_back(
    stores: tuple[SqlEventStore, SqlEventStore],
) -> None:
    first, second = stores
    fill(first, 30)
    mine = first.outbox.rows_to_publish("relay-1", 10, 60)
    theirs = second.outbox.rows_to_publish("relay-2", 100, 60)
    assert (len(mine), len(theirs)) == (10, 20)
    assert {row.id for row in mine}.isdisjoint(row.id for row in theirs)
    assert max(row.id for row in mine) < min(row.id for row in theirs)  # oldest first
    assert second.outbox.rows_to_publish("relay-3", 100, 60) == []
    # A restart under the same id carries on with its own rows at once.
    assert [row.id for row in first.outbox.rows_to_publish("relay-1", 100, 60)] == [
        r.id for r in mine
    ]
    # A relay that stops releases what it did not publish.
    second.outbox.release("relay-2")
    assert [row.id for row in first.outbox.rows_to_publish("relay-3", 100, 60)] == [
        r.id for r in theirs
    ]


async def test_rows_of_a_dead_relay_are_published_by_another_after_its_lease(
    stores: tuple[SqlEventStore, SqlEventStore],
) -> None:
    first, second = stores
    ids = fill(first, 20)
    lease_s = 3.0  # long enough that the second claim below comes before it ends
    held = first.outbox.rows_to_publish(
        "dead-relay", 100, lease_s
    )  # and then it dies, never publishing
    assert len(held) == 20
    with first.writer.connect() as connection:
        lease_end = connection.execute(select(outbox.c.claimed_until).limit(1)).scalar_one()
    assert second.outbox.rows_to_publish("relay-2", 100, lease_s) == []

    publisher = RecordingPublisher()
    survivor = OutboxRelay(second.outbox, publisher, relay_id="relay-2", poll_interval=0.1)
    await relay_until([survivor], lambda: unpublished(first) == 0)

    assert sorted(publisher.published) == sorted(ids)
    with first.writer.connect() as connection:
        rows = connection.execute(select(outbox.c.claimed_by, outbox.c.published_at)).all()
    assert {row.claimed_by for row in rows} == {"relay-2"}
    assert all(row.published_at >= lease_end for row in rows), "published before the lease ended"


def test_sqlite_has_one_relay_and_claim_only_reads(tmp_path: Path) -> None:
    store = SqlEventStore(f"sqlite:///{tmp_path / 'events.db'}")
    try:
        fill(store, 3)
        assert not store.outbox.leases
        assert len(store.outbox.rows_to_publish("relay-1", 10, 60)) == 3
        assert len(store.outbox.rows_to_publish("relay-2", 10, 60)) == 3
    finally:
        store.close()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_an_outbox_made_before_claims_gets_the_columns_at_startup(
    database: str, postgres_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}" if database == "sqlite" else postgres_url
    old = MetaData()
    old_outbox = Table(
        "outbox",
        old,
        *(
            Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
            for c in outbox.c
            if c.name not in ("claimed_by", "claimed_until")
        ),
    )
    engine = make_engine(url, writer=True)
    old.create_all(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(old_outbox).values(
                event_id="e-1",
                topic="cart.events",
                key="c",
                headers="{}",
                payload=b"x",
                created_at=NOW,
                attempts=0,
            )
        )
    engine.dispose()

    store = SqlEventStore(url)
    try:
        [row] = store.outbox.rows_to_publish("relay-1", 10, 60)
        assert row.event_id == "e-1"
    finally:
        store.close()
    assert make_url(url).get_backend_name() == database


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_marking_keeps_each_rows_broker_sequence_whatever_their_order(
    database: str, postgres_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'events.db'}" if database == "sqlite" else postgres_url
    store = SqlEventStore(url)
    try:
        fill(store, 7)
        ids = [row.id for row in store.outbox.pending()]
        marked = {ids[5]: 40, ids[0]: 10, ids[1]: 11, ids[2]: 13, ids[4]: None, ids[6]: 41}
        store.outbox.mark_published(list(marked), list(marked.values()))
        with store.writer.connect() as connection:
            rows = connection.execute(
                select(outbox.c.id, outbox.c.broker_sequence, outbox.c.published_at)
            ).all()
        assert {row.id: row.broker_sequence for row in rows} == {**marked, ids[3]: None}
        assert [row.id for row in rows if row.published_at is None] == [ids[3]]
    finally:
        store.close()
