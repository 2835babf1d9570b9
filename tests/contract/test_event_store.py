"""The event store contract (DESIGN §3.2, §4): every store keeps the same promises.

One story, told to the in-memory store, SQLite and PostgreSQL alike: a cart's events are
appended at the version the writer expects, read back exactly as written, fed to readers by
global position, and refused — leaving nothing behind — when another writer got there first.
The SQL stores also write one outbox row per event in the same commit, and keep it all
across restarts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.pool import NullPool

from microservice_connector.events import CartCheckedOut, ItemAdded, NewEvent, RecordedEvent
from microservice_connector.eventstore import (
    AppendRequest,
    ConcurrencyError,
    DatabaseUnavailable,
    EventStore,
    GroupCommitStore,
    InMemoryEventStore,
    SqlEventStore,
    feed_horizon,
)
from microservice_connector.eventstore.port import AppendResult
from microservice_connector.eventstore.schema import events as events_table
from microservice_connector.eventstore.schema import outbox
from support.postgres import fresh_schema, with_options
from support.threads import outcome, race

T = TypeVar("T")

AT = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=UTC)
LATER = AT + timedelta(minutes=5)
CART = "cart-1"


# --- the story's vocabulary -------------------------------------------------------------


def added(
    cart_id: str = CART,
    item_id: str = "item-001",
    quantity: int = 1,
    *,
    at: datetime = AT,
    **envelope: Any,
) -> NewEvent:
    """An `ItemAdded` event about to be appended."""
    return NewEvent("ItemAdded", ItemAdded(cart_id, item_id, quantity, at), at, **envelope)


def items(cart_id: str, count: int, *, first: int = 1) -> list[NewEvent]:
    """`count` `ItemAdded` events for different items, numbered from `first`."""
    return [added(cart_id, f"item-{n:03d}") for n in range(first, first + count)]


def append(cart_id: str, expected_version: int, events: Sequence[NewEvent]) -> AppendRequest:
    """Append `events` to the cart, whose version must be `expected_version`."""
    return AppendRequest(cart_id, "ShoppingCart", expected_version, list(events))


def versions(recorded: Sequence[RecordedEvent]) -> list[int]:
    return [event.version for event in recorded]


def positions(recorded: Sequence[RecordedEvent]) -> list[int]:
    return [event.position for event in recorded]


def strictly_increasing(numbers: Sequence[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(numbers))


# --- the stores under test --------------------------------------------------------------


@dataclass
class Backend:
    """Opens stores of one kind on one database and closes them when the test ends."""

    kind: str
    url: str | None
    opened: list[EventStore] = field(default_factory=list)

    def open(self, **options: Any) -> EventStore:
        store = InMemoryEventStore() if self.url is None else SqlEventStore(self.url, **options)
        self.opened.append(store)
        return store

    def outbox_rows(self) -> list[dict[str, Any]]:
        assert self.url is not None, "only SQL stores have an outbox"
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.connect() as connection:
                rows = connection.execute(select(outbox).order_by(outbox.c.id))
                return [dict(row._mapping) for row in rows]
        finally:
            engine.dispose()

    def close(self) -> None:
        for store in reversed(self.opened):
            store.close()


def _backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    kind: str = request.param
    if kind == "memory":
        url = None
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'events.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    backend = Backend(kind, url)
    try:
        yield backend
    finally:
        backend.close()


POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """Every kind of event store, on a fresh empty database."""
    yield from _backend(request, tmp_path)


@pytest.fixture(params=["sqlite", POSTGRES])
def sql_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The SQL event stores, on a fresh empty database."""
    yield from _backend(request, tmp_path)


@pytest.fixture
def store(backend: Backend) -> EventStore:
    return backend.open()


@pytest.fixture
def sql_store(sql_backend: Backend) -> EventStore:
    return sql_backend.open()


# --- every store ------------------------------------------------------------------------


class TestEventStoreContract:
    """What every `EventStore` promises: memory, SQLite and PostgreSQL alike."""

    # Appending

    def test_a_new_cart_starts_at_version_one(self, store: EventStore) -> None:
        recorded = store.append(append(CART, 0, items(CART, 3)))

        assert versions(recorded) == [1, 2, 3]
        assert recorded[0].position > 0
        assert strictly_increasing(positions(recorded))
        assert {event.aggregate_id for event in recorded} == {CART}

    def test_a_later_append_continues_the_stream(self, store: EventStore) -> None:
        first = store.append(append(CART, 0, items(CART, 2)))
        more = store.append(append(CART, 2, items(CART, 1, first=3)))

        assert versions(more) == [3]
        assert more[0].position > first[-1].position

    # Reading back

    def test_load_returns_the_events_oldest_first_exactly_as_written(
        self, store: EventStore
    ) -> None:
        event_id = str(uuid.uuid4())
        payload = ItemAdded(CART, "item-001", 2, AT)
        appended = store.append(
            append(
                CART,
                0,
                [
                    NewEvent(
                        "ItemAdded",
                        payload,
                        AT,
                        schema_version=2,
                        correlation_id="corr-1",
                        causation_id="cmd-1",
                        event_id=event_id,
                    ),
                    NewEvent("CartCheckedOut", CartCheckedOut(CART, LATER), LATER),
                ],
            )
        )

        loaded = store.load(CART)

        assert loaded == appended
        first, second = loaded
        assert (first.event_id, first.aggregate_id, first.aggregate_type) == (
            event_id,
            CART,
            "ShoppingCart",
        )
        assert (first.event_type, first.schema_version, first.content_type) == (
            "ItemAdded",
            2,
            "application/json",
        )
        assert (first.correlation_id, first.causation_id) == ("corr-1", "cmd-1")
        assert first.event_data == msgspec.json.encode(payload)
        assert first.timestamp == AT
        assert first.timestamp.utcoffset() == timedelta(0)
        assert (second.event_type, second.schema_version) == ("CartCheckedOut", 1)
        assert (second.correlation_id, second.causation_id) == (None, None)
        assert uuid.UUID(second.event_id) != uuid.UUID(event_id)
        assert json.loads(second.event_data) == {
            "cart_id": CART,
            "timestamp": "2024-05-01T12:35:15.123456Z",
        }
        assert second.timestamp == LATER

    def test_timestamps_come_back_in_utc_whatever_zone_they_were_given_in(
        self, backend: Backend, store: EventStore, request: pytest.FixtureRequest
    ) -> None:
        in_paris = datetime(2024, 5, 1, 14, 30, tzinfo=timezone(timedelta(hours=2)))
        store.append(append(CART, 0, [added(at=in_paris)]))

        (loaded,) = store.load(CART)

        assert loaded.timestamp == in_paris
        assert loaded.timestamp.utcoffset() == timedelta(0)

    def test_load_reads_a_range_of_versions(self, store: EventStore) -> None:
        store.append(append(CART, 0, items(CART, 5)))

        def loaded(**bounds: int) -> list[int]:
            return versions(store.load(CART, **bounds))

        assert loaded() == [1, 2, 3, 4, 5]
        assert loaded(after_version=2) == [3, 4, 5]
        assert loaded(to_version=2) == [1, 2]
        assert loaded(after_version=1, to_version=3) == [2, 3]
        assert loaded(after_version=5) == []
        assert store.load("no-such-cart") == []

    def test_load_takes_any_integer_bounds_alike_on_every_database(self, store: EventStore) -> None:
        # PostgreSQL's version column is 32 bits; the API passes versions up to 2**63 - 1.
        store.append(append(CART, 0, items(CART, 3)))

        def loaded(**bounds: int) -> list[int]:
            return versions(store.load(CART, **bounds))

        assert loaded(after_version=2**31) == []
        assert loaded(after_version=2**63 - 1) == []
        assert loaded(to_version=2**31) == [1, 2, 3]
        assert loaded(after_version=1, to_version=2**63 - 1) == [2, 3]
        assert loaded(after_version=-(2**40)) == [1, 2, 3]
        assert loaded(after_version=-2, to_version=2) == [1, 2]
        assert loaded(to_version=0) == []
        assert loaded(to_version=-1) == []

    # Optimistic concurrency

    def test_a_stale_expected_version_is_refused_and_writes_nothing(
        self, store: EventStore
    ) -> None:
        store.append(append(CART, 0, items(CART, 2)))

        with pytest.raises(ConcurrencyError) as refused:
            store.append(append(CART, 1, items(CART, 1, first=3)))

        assert (refused.value.aggregate_id, refused.value.expected) == (CART, 1)
        assert refused.value.actual == 2
        assert versions(store.load(CART)) == [1, 2]
        assert len(store.read_all()) == 2

    def test_an_expected_version_ahead_of_the_stream_is_refused(self, store: EventStore) -> None:
        store.append(append(CART, 0, items(CART, 1)))

        with pytest.raises(ConcurrencyError):
            store.append(append(CART, 2, items(CART, 1, first=2)))
        with pytest.raises(ConcurrencyError):
            store.append(append("cart-2", 1, items("cart-2", 1)))

        assert versions(store.read_all()) == [1]

    def test_a_multi_event_append_is_all_or_nothing(self, store: EventStore) -> None:
        existing = store.append(append(CART, 0, items(CART, 1)))
        reused_id = added("cart-2", "item-003", event_id=existing[0].event_id)

        with pytest.raises(ConcurrencyError):
            store.append(append("cart-2", 0, [*items("cart-2", 2), reused_id]))

        assert store.load("cart-2") == []
        assert store.read_all() == existing
        assert versions(store.append(append("cart-2", 0, items("cart-2", 2)))) == [1, 2]

    def test_an_event_id_cannot_repeat_within_one_append(
        self, backend: Backend, store: EventStore, request: pytest.FixtureRequest
    ) -> None:
        twice = str(uuid.uuid4())

        with pytest.raises(ConcurrencyError):
            store.append(append(CART, 0, [added(event_id=twice), added(event_id=twice)]))

        assert store.read_all() == []

    def test_an_append_of_no_events_changes_nothing(self, store: EventStore) -> None:
        store.append(append(CART, 0, items(CART, 1)))

        assert store.append(append(CART, 1, [])) == []
        assert versions(store.load(CART)) == [1]

    # Batches

    def test_a_batch_stores_each_append_on_its_own_version_check(self, store: EventStore) -> None:
        store.append(append("cart-b", 0, items("cart-b", 1)))

        stored_a, refused_b, stored_c = store.append_batch(
            [
                append("cart-a", 0, items("cart-a", 1)),
                append("cart-b", 0, items("cart-b", 1, first=2)),
                append("cart-c", 0, items("cart-c", 2)),
            ]
        )

        assert isinstance(refused_b, ConcurrencyError)
        assert refused_b.aggregate_id == "cart-b"
        assert store.load("cart-a") == stored_a
        assert versions(store.load("cart-b")) == [1]
        assert store.load("cart-c") == stored_c
        assert versions(stored_c) == [1, 2]

    def test_a_batch_may_append_twice_to_one_cart(self, store: EventStore) -> None:
        first, second = store.append_batch(
            [append(CART, 0, items(CART, 2)), append(CART, 2, items(CART, 1, first=3))]
        )

        assert not isinstance(first, ConcurrencyError)
        assert not isinstance(second, ConcurrencyError)
        assert versions(second) == [3]
        assert store.load(CART) == first + second

    def test_a_batch_refuses_the_second_of_two_appends_at_the_same_version(
        self, store: EventStore
    ) -> None:
        first, second = store.append_batch(
            [append(CART, 0, items(CART, 1)), append(CART, 0, items(CART, 1, first=2))]
        )

        assert isinstance(second, ConcurrencyError)
        assert second.expected == 0
        assert store.load(CART) == first

    # The global feed

    def test_read_all_pages_through_every_cart_by_position(self, store: EventStore) -> None:
        store.append(append("cart-a", 0, items("cart-a", 2)))
        store.append(append("cart-b", 0, items("cart-b", 1)))
        store.append(append("cart-a", 2, items("cart-a", 1, first=3)))
        store.append(append("cart-c", 0, items("cart-c", 2)))

        page_1 = store.read_all(limit=4)
        page_2 = store.read_all(after_position=page_1[-1].position, limit=4)
        page_3 = store.read_all(after_position=page_2[-1].position, limit=4)

        assert [(e.aggregate_id, e.version) for e in page_1 + page_2] == [
            ("cart-a", 1),
            ("cart-a", 2),
            ("cart-b", 1),
            ("cart-a", 3),
            ("cart-c", 1),
            ("cart-c", 2),
        ]
        assert (len(page_1), len(page_2), page_3) == (4, 2, [])
        assert strictly_increasing(positions(page_1 + page_2))
        assert store.read_all(after_position=page_1[1].position, limit=1) == [page_1[2]]

    # Racing writers

    def test_of_threads_racing_for_one_version_exactly_one_wins(self, store: EventStore) -> None:
        outcomes = race(8, lambda n: store.append(append(CART, 0, [added(item_id=f"item-{n}")])))

        winners = [outcome for outcome in outcomes if isinstance(outcome, list)]
        losers = [outcome for outcome in outcomes if isinstance(outcome, ConcurrencyError)]
        assert (len(winners), len(losers)) == (1, 7), outcomes
        assert store.load(CART) == winners[0]

    async def test_group_commit_answers_every_caller_from_shared_commits(
        self, store: EventStore
    ) -> None:
        counting = CountingStore(store)
        grouped = GroupCommitStore(counting)
        carts = [f"cart-{n}" for n in range(50)]
        try:
            results = await asyncio.gather(
                *(grouped.append(append(cart, 0, items(cart, 1))) for cart in carts)
            )
            feed = await grouped.read_all(limit=100)
        finally:
            grouped.close()

        assert [(r[0].aggregate_id, r[0].version) for r in results] == [(c, 1) for c in carts]
        assert len(feed) == 50
        assert sum(counting.batch_sizes) == 50
        assert len(counting.batch_sizes) <= 5, counting.batch_sizes

    async def test_group_commit_tells_the_later_of_two_writers_it_lost(
        self, store: EventStore
    ) -> None:
        grouped = GroupCommitStore(store)
        try:
            first, second = await asyncio.gather(
                grouped.append(append(CART, 0, items(CART, 1))),
                grouped.append(append(CART, 0, items(CART, 1, first=2))),
                return_exceptions=True,
            )
        finally:
            grouped.close()

        assert isinstance(second, ConcurrencyError)
        assert store.load(CART) == first


class CountingStore:
    """An `EventStore` that remembers the size of every batch it was asked to commit."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.batch_sizes: list[int] = []

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        self.batch_sizes.append(len(requests))
        return self.store.append_batch(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


# --- the SQL stores ---------------------------------------------------------------------


class TestSqlEventStore:
    """What SQLite and PostgreSQL add: the outbox, and a guard that holds across processes."""

    def test_each_event_gets_one_outbox_row_in_the_same_commit(
        self, sql_backend: Backend, sql_store: EventStore
    ) -> None:
        recorded = sql_store.append(
            append(
                CART,
                0,
                [
                    added(correlation_id="corr-1", causation_id="cmd-1"),
                    added(item_id="item-002", at=LATER, correlation_id="corr-1"),
                ],
            )
        )

        rows = sql_backend.outbox_rows()

        assert [row["event_id"] for row in rows] == [event.event_id for event in recorded]
        for row, event_, occurred_at, causation in zip(
            rows,
            recorded,
            ["2024-05-01T12:30:15.123456Z", "2024-05-01T12:35:15.123456Z"],
            ["cmd-1", ""],
            strict=True,
        ):
            assert (row["topic"], row["key"]) == ("cart.events", CART)
            assert bytes(row["payload"]) == event_.event_data
            assert row["published_at"] is None
            assert (
                json.loads(row["headers"]).items()
                >= {
                    "event-id": event_.event_id,
                    "event-type": "ItemAdded",
                    "aggregate-id": CART,
                    "aggregate-version": str(event_.version),
                    "content-type": "application/json",
                    "schema-version": "1",
                    "correlation-id": "corr-1",
                    "causation-id": causation,
                    "occurred-at": occurred_at,
                }.items()
            )

    def test_a_refused_append_leaves_no_outbox_rows(
        self, sql_backend: Backend, sql_store: EventStore
    ) -> None:
        stored = sql_store.append(append(CART, 0, items(CART, 2)))

        with pytest.raises(ConcurrencyError):
            sql_store.append(append(CART, 1, items(CART, 1, first=3)))
        reused_id = added("cart-2", event_id=stored[0].event_id)
        with pytest.raises(ConcurrencyError):
            sql_store.append(append("cart-2", 0, [*items("cart-2", 2), reused_id]))
        refused, stored_too = sql_store.append_batch(
            [append(CART, 0, items(CART, 1)), append("cart-3", 0, items("cart-3", 1))]
        )

        assert isinstance(refused, ConcurrencyError)
        assert not isinstance(stored_too, ConcurrencyError)
        assert [row["event_id"] for row in sql_backend.outbox_rows()] == [
            event.event_id for event in stored + stored_too
        ]

    def test_without_an_outbox_topic_no_outbox_rows_are_written(self, sql_backend: Backend) -> None:
        store = sql_backend.open(outbox_topic=None)

        store.append(append(CART, 0, items(CART, 2)))

        assert versions(store.load(CART)) == [1, 2]
        assert sql_backend.outbox_rows() == []

    def test_of_stores_racing_for_one_version_exactly_one_wins(self, sql_backend: Backend) -> None:
        stores = [sql_backend.open() for _ in range(8)]  # as if eight processes

        outcomes = race(8, lambda n: stores[n].append(append(CART, 0, items(CART, 1, first=n))))

        winners = [outcome for outcome in outcomes if isinstance(outcome, list)]
        losers = [outcome for outcome in outcomes if isinstance(outcome, ConcurrencyError)]
        assert (len(winners), len(losers)) == (1, 7), outcomes
        assert stores[0].load(CART) == winners[0]
        assert len(sql_backend.outbox_rows()) == 1


class TestSqliteFile:
    """The SQLite file is the record: it outlives the process and any tool can read it."""

    def test_events_survive_reopening_the_file(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'events.db'}"
        first_run = SqlEventStore(url)
        recorded = first_run.append(append(CART, 0, items(CART, 2)))
        first_run.close()

        second_run = SqlEventStore(url)
        try:
            assert second_run.load(CART) == recorded
            assert second_run.read_all() == recorded
            assert versions(second_run.append(append(CART, 2, items(CART, 1, first=3)))) == [3]
        finally:
            second_run.close()

    def test_sqlite3_shows_the_events_as_json(self, tmp_path: Path) -> None:
        path = tmp_path / "events.db"
        store = SqlEventStore(f"sqlite:///{path}")
        try:
            store.append(append(CART, 0, [added(quantity=2, correlation_id="corr-1")]))

            with closing(sqlite3.connect(path)) as db:
                db.row_factory = sqlite3.Row
                (row,) = db.execute("SELECT * FROM events").fetchall()
        finally:
            store.close()

        assert row.keys() == [
            "id",
            "event_id",
            "aggregate_id",
            "aggregate_type",
            "version",
            "event_type",
            "event_data",
            "metadata",
            "timestamp",
        ]
        assert (row["aggregate_id"], row["version"], row["event_type"]) == (CART, 1, "ItemAdded")
        assert json.loads(row["event_data"]) == {
            "cart_id": CART,
            "item_id": "item-001",
            "quantity": 2,
            "timestamp": "2024-05-01T12:30:15.123456Z",
        }
        assert json.loads(row["metadata"])["correlation_id"] == "corr-1"
        assert row["timestamp"].startswith("2024-05-01 12:30:15")


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.postgres
class TestPostgresEventStore:
    """PostgreSQL runs writers side by side, where SQLite takes them one at a time."""

    def test_timestamps_come_back_in_utc_whatever_the_server_time_zone(
        self, postgres_url: str
    ) -> None:
        store = SqlEventStore(with_options(postgres_url, "-ctimezone=America/New_York"))
        try:
            store.append(append(CART, 0, items(CART, 1)))
            (loaded,) = store.load(CART)
        finally:
            store.close()

        assert loaded.timestamp == AT
        assert loaded.timestamp.utcoffset() == timedelta(0)

    def test_writers_taking_two_carts_in_opposite_orders_both_get_answers(
        self, postgres_url: str
    ) -> None:
        # A third transaction holds the id the first writer's second row will get, so that
        # writer stops between its two rows -- as a slow process might -- and the second
        # writer, taking the carts the other way round, gets cart-b first: a lock cycle.
        store = SqlEventStore(postgres_url)
        monitor = Monitor(postgres_url)
        try:
            with ThreadPoolExecutor(2) as pool, monitor.engine.connect() as holder:
                next_id = holder.execute(
                    text("SELECT nextval(pg_get_serial_sequence('events', 'id'))")
                ).scalar_one()
                holder.execute(insert(events_table).values(gate_row(next_id + 2)))
                a_then_b = pool.submit(
                    store.append_batch,
                    [
                        append("cart-a", 0, items("cart-a", 1)),
                        append("cart-b", 0, items("cart-b", 1)),
                    ],
                )
                monitor.wait_for_lock_waiters(1, a_then_b)
                b_then_a = pool.submit(
                    store.append_batch,
                    [
                        append("cart-b", 0, items("cart-b", 1)),
                        append("cart-a", 0, items("cart-a", 1)),
                    ],
                )
                monitor.wait_for_lock_waiters(2, b_then_a)
                holder.rollback()
                outcomes = [a_then_b.result(timeout=60), b_then_a.result(timeout=60)]
            stored = {cart: versions(store.load(cart)) for cart in ("cart-a", "cart-b")}
        finally:
            monitor.close()
            store.close()

        slots = [slot for outcome in outcomes for slot in outcome]
        assert all(isinstance(slot, (list, ConcurrencyError)) for slot in slots)
        assert sum(isinstance(slot, list) for slot in slots) == 2
        assert stored == {"cart-a": [1], "cart-b": [1]}

    def test_a_feed_reader_never_misses_an_event_committed_behind_its_cursor(
        self, postgres_url: str
    ) -> None:
        store = SqlEventStore(postgres_url)
        monitor = Monitor(postgres_url)
        try:
            with ThreadPoolExecutor(1) as pool, slow_writer(store, "cart-slow") as slow:
                fast = pool.submit(store.append, append("cart-fast", 0, items("cart-fast", 1)))
                # The slow writer is one lock waiter (on the hold); the fast one would be another.
                monitor.poll(
                    lambda: fast.done() or monitor.lock_waiters() > 1,
                    "the fast writer has committed or waits for the slow one",
                )
                first_page = store.read_all()
            slow.result(timeout=30)
            fast.result(timeout=30)
            cursor = first_page[-1].position if first_page else 0
            seen = first_page + store.read_all(after_position=cursor)
        finally:
            monitor.close()
            store.close()

        assert sorted(event.aggregate_id for event in seen) == ["cart-fast", "cart-slow"]

    def test_appends_to_other_carts_commit_while_one_is_still_open(self, postgres_url: str) -> None:
        # No writer waits for another's commit: the feed, not the writers, waits for the
        # open one, and shows the later commits only once the earlier position is settled.
        store = SqlEventStore(postgres_url)
        try:
            with slow_writer(store, "cart-slow") as slow:
                fast = [
                    store.append(append(f"cart-{n}", 0, items(f"cart-{n}", 1))) for n in range(3)
                ]
                assert not slow.done()
                while_open = store.read_all()
            after = store.read_all()
        finally:
            store.close()

        assert while_open == []
        assert after == slow.result(timeout=30) + [event for events_ in fast for event in events_]

    def test_a_store_in_another_schema_of_the_database_does_not_hold_this_feed_back(
        self, postgres_url: str, postgres_server_url: str
    ) -> None:
        # Both stores' positions start at 1: the other store's open append holds its own
        # position 1, which must not hide this store's events at positions 1 to 3.
        store = SqlEventStore(postgres_url)
        with fresh_schema(postgres_server_url) as other_url:
            other = SqlEventStore(other_url)
            try:
                stored = [
                    event
                    for n in range(3)
                    for event in store.append(append(f"cart-{n}", 0, items(f"cart-{n}", 1)))
                ]
                with slow_writer(other, "cart-other") as slow:
                    assert not slow.done()
                    seen_while_open = store.read_all()
                    other_while_open = other.read_all()
                other_after = other.read_all()
            finally:
                other.close()
                store.close()

        assert [event.position for event in stored] == [1, 2, 3]
        assert seen_while_open == stored
        assert other_while_open == []  # its own feed still waits for its open append
        assert other_after == slow.result(timeout=30)

    def test_a_reader_on_a_server_that_defaults_to_repeatable_read_skips_no_late_commit(
        self, postgres_url: str
    ) -> None:
        # Position 1 is in flight and 2 committed when the reader starts; it then waits for the
        # horizon's critical section while 1 commits. Under repeatable read its page would be
        # read in the snapshot of its first statement, without 1, and its cursor pass 1.
        url = with_options(postgres_url, r"-cdefault_transaction_isolation=repeatable\ read")
        store = SqlEventStore(url)
        section_lock = text("SELECT pg_advisory_lock(:class, :slot)")
        try:
            with (
                store.writer.connect() as late,
                Monitor(url) as monitor,
                monitor.engine.connect() as section,
                ThreadPoolExecutor(1) as pool,
            ):
                late.execute(text("SELECT msc_take_positions(1)")).scalar_one()
                late.execute(insert(events_table).values(gate_row(1)))
                early = store.append(append("cart-early", 0, items("cart-early", 1)))
                slot = section.execute(feed_horizon.SLOT).scalar_one()
                key = {"class": feed_horizon._SECTION_CLASS, "slot": slot}
                section.execute(section_lock, key)
                reading = pool.submit(store.read_all)
                monitor.wait_for_lock_waiters(1, reading)
                late.commit()
                section.execute(text("SELECT pg_advisory_unlock(:class, :slot)"), key)
                page = reading.result(timeout=30)
        finally:
            store.close()

        assert [event.position for event in early] == [2]
        assert [event.position for event in page] == [1, 2]


@contextmanager
def slow_writer(store: SqlEventStore, cart_id: str) -> Iterator[Future[list[RecordedEvent]]]:
    """Append one event to `cart_id` on another thread, held after inserting its row (its
    transaction open, its position taken) until the block ends; the append's future.

    The hold is PostgreSQL's own: another transaction has inserted an outbox row for the
    event's id and not committed, so the writer, having written the event, waits on that
    row's unique key (the store writes an append's events before its outbox rows)."""
    event_id, url = str(uuid.uuid4()), store.writer.url.render_as_string(hide_password=False)
    with store.writer.connect() as holder:
        holder.execute(insert(outbox).values(outbox_row_for(event_id)))
        with (
            ThreadPoolExecutor(1) as pool,
            Monitor(url) as monitor,
        ):
            request = append(cart_id, 0, [added(cart_id, event_id=event_id)])
            slow = pool.submit(store.append, request)
            try:
                monitor.wait_for_lock_waiters(1, slow)
                yield slow
            finally:
                holder.rollback()
            slow.result(timeout=30)


def outbox_row_for(event_id: str) -> dict[str, Any]:
    """An outbox row of `event_id` that no test reads."""
    return {
        "event_id": event_id,
        "topic": "hold",
        "key": "hold",
        "headers": "{}",
        "payload": b"{}",
        "created_at": AT,
        "attempts": 0,
    }


def gate_row(position: int) -> dict[str, Any]:
    """An events row at `position` that belongs to no cart under test."""
    return {
        "id": position,
        "event_id": str(uuid.uuid4()),
        "aggregate_id": "gate",
        "aggregate_type": "Gate",
        "version": 1,
        "event_type": "Gate",
        "event_data": b"{}",
        "metadata": "{}",
        "timestamp": AT,
    }


class Monitor:
    """Watches a PostgreSQL database from the side: who is waiting on a lock."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)
        # Outside a transaction, so each look at pg_stat_activity is fresh.
        self._connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")

    def lock_waiters(self) -> int:
        query = text(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(self._connection.execute(query).scalar_one())

    def wait_for_lock_waiters(self, count: int, writer: Future[Any]) -> None:
        def waiting() -> bool:
            if writer.done():
                raise AssertionError(f"the writer finished instead of waiting: {outcome(writer)}")
            return self.lock_waiters() >= count

        self.poll(waiting, f"{count} sessions wait on a lock")

    @staticmethod
    def poll(condition: Callable[[], bool], what: str, deadline_s: float = 30) -> None:
        deadline = time.monotonic() + deadline_s
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting until {what}"
            time.sleep(0.005)

    def close(self) -> None:
        self._connection.close()
        self.engine.dispose()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# --- opening a store --------------------------------------------------------------------


class TestOpeningAStore:
    """A store that cannot open says which database and why, and never shows a password."""

    def test_an_unreachable_postgres_is_named_with_the_reason(self) -> None:
        with pytest.raises(DatabaseUnavailable) as unavailable:
            SqlEventStore("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/nope")

        message = str(unavailable.value)
        assert "127.0.0.1:1/nope unavailable" in message
        assert "Connection refused" in message
        assert "s3cret" not in message

    @pytest.mark.parametrize(
        ("url", "reason"),
        [
            ("mysql://x/y", "unsupported database 'mysql'"),
            ("sqlite://", "give SQLite a file path"),
            ("not a url", "not a database URL"),
        ],
    )
    def test_a_url_it_cannot_use_is_refused_with_the_reason(self, url: str, reason: str) -> None:
        with pytest.raises(DatabaseUnavailable, match=reason):
            SqlEventStore(url)

    def test_a_refused_url_does_not_show_its_password(self) -> None:
        with pytest.raises(DatabaseUnavailable) as refused:
            SqlEventStore("mysql://shop:s3cret@db.example/shop")

        assert "s3cret" not in str(refused.value)

    def test_a_sqlite_file_whose_folder_cannot_be_made_is_refused(self, tmp_path: Path) -> None:
        not_a_folder = tmp_path / "plain-file"
        not_a_folder.write_text("")

        with pytest.raises(DatabaseUnavailable, match="cannot create folder for SQLite file"):
            SqlEventStore(f"sqlite:///{not_a_folder / 'data' / 'events.db'}")
