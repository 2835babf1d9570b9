"""Idempotency keys in the event store: a key is recorded in the transaction of its
command's events, so it exists exactly when they do; an append whose key was recorded (and
has not expired) writes nothing and says so. The same on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Engine, create_engine, select, text

from microservice_connector.cart_service.application.idempotency import IdempotentCommands
from microservice_connector.events import ItemAdded, NewEvent, RecordedEvent
from microservice_connector.eventstore import (
    AppendRequest,
    ConcurrencyError,
    EventStore,
    InMemoryEventStore,
    SqlEventStore,
)
from microservice_connector.eventstore.engine import parse_database_url
from microservice_connector.eventstore.idempotency import (
    IdempotencyKey,
    IdempotencyKeyUsed,
    RecordedKey,
)
from microservice_connector.eventstore.idempotency_keys import idempotency_keys
from support.threads import race

T = TypeVar("T")
NOW = datetime.now(UTC)
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def added(cart_id: str, item_id: str = "item-1") -> NewEvent:
    return NewEvent("ItemAdded", ItemAdded(cart_id, item_id, 1, NOW), NOW)


def keyed(
    cart_id: str,
    expected_version: int,
    key: str,
    *,
    fingerprint: str = "f1",
    ttl: timedelta = timedelta(hours=24),
    events: int = 1,
) -> AppendRequest:
    return AppendRequest(
        cart_id,
        "ShoppingCart",
        expected_version,
        [added(cart_id, f"item-{n}") for n in range(events)],
        IdempotencyKey(key, fingerprint, ttl),
    )


def plain(cart_id: str, expected_version: int) -> AppendRequest:
    return AppendRequest(cart_id, "ShoppingCart", expected_version, [added(cart_id)])


class Stores:
    """Opens stores on one fresh database (none for memory) and closes them afterwards."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.opened: list[EventStore] = []
        self._memory = InMemoryEventStore()

    def open(self) -> EventStore:
        store: EventStore = self._memory if self.url is None else SqlEventStore(self.url)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in reversed(self.opened):
            store.close()


def _stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    kind = request.param
    url = {
        "memory": lambda: None,
        "sqlite": lambda: f"sqlite:///{tmp_path / 'events.db'}",
        "postgres": lambda: request.getfixturevalue("postgres_url"),
    }[kind]()
    stores = Stores(url)
    try:
        yield stores
    finally:
        stores.close()


@pytest.fixture(params=["memory", "sqlite", POSTGRES])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield from _stores(request, tmp_path)


@pytest.fixture(params=["sqlite", POSTGRES])
def sql_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    yield from _stores(request, tmp_path)


def used_record(store: EventStore, request: AppendRequest) -> RecordedKey:
    with pytest.raises(IdempotencyKeyUsed) as raised:
        store.append(request)
    return raised.value.record


def test_a_key_recorded_with_its_events_refuses_a_second_append(stores: Stores) -> None:
    store = stores.open()
    store.append(plain("c1", 0))
    store.append(keyed("c1", 1, "k1", events=2))
    record = used_record(store, keyed("c1", 3, "k1", fingerprint="f2"))
    assert (record.key, record.fingerprint, record.aggregate_id, record.version) == (
        "k1",
        "f1",
        "c1",
        3,
    )
    assert len(store.load("c1")) == 3  # the second append wrote nothing
    # Another cart, the same key: still the same key, still refused.
    assert used_record(store, keyed("c2", 0, "k1")).aggregate_id == "c1"
    assert store.load("c2") == []


def test_an_append_that_fails_records_no_key(stores: Stores) -> None:
    store = stores.open()
    with pytest.raises(ConcurrencyError):
        store.append(keyed("c1", 5, "k1"))
    assert [e.version for e in store.append(keyed("c1", 0, "k1"))] == [1]


def test_an_expired_key_is_free_again(stores: Stores) -> None:
    store = stores.open()
    store.append(keyed("c1", 0, "k1", ttl=timedelta(seconds=-1)))
    store.append(keyed("c1", 1, "k1", fingerprint="f2"))
    record = used_record(store, keyed("c1", 2, "k1"))
    assert (record.fingerprint, record.version) == ("f2", 2)


def test_a_key_is_kept_for_its_lifetime_from_the_commit_that_records_it(
    stores: Stores,
) -> None:
    # Counted from the request's start instead, a command slower than the lifetime would
    # record a key already expired, and its retry would be applied again.
    store = stores.open()
    request = keyed("c1", 0, "k1", ttl=timedelta(hours=1))
    committing = datetime.now(UTC)
    store.append(request)
    committed = datetime.now(UTC)
    expires_at = used_record(store, keyed("c1", 1, "k1")).expires_at
    assert committing + timedelta(hours=1) <= expires_at <= committed + timedelta(hours=1)


@pytest.mark.postgres
def test_a_key_recorded_after_a_long_wait_for_a_lock_still_lives_its_lifetime(
    postgres_url: str,
) -> None:
    # Counted from the transaction's start, a key whose insert waited longer than its
    # lifetime was stored expired, and the command's retry was applied again.
    store = SqlEventStore(postgres_url)
    engine = create_engine(parse_database_url(postgres_url))
    try:
        with engine.connect() as locker:
            locker.execute(text("LOCK TABLE events IN EXCLUSIVE MODE"))
            appending = threading.Thread(
                target=store.append, args=(keyed("c1", 0, "slow", ttl=timedelta(seconds=1)),)
            )
            appending.start()
            _until(lambda: _waiting_for_a_table(engine), "the append waiting for the lock")
            stalled = time.monotonic()
            _until(lambda: time.monotonic() - stalled > 1.5, "the key's lifetime to pass")
            locker.rollback()
        appending.join(10)
        assert [e.version for e in store.load("c1")] == [1]
        used_record(store, keyed("c1", 1, "slow"))  # the retry finds the key: not applied
    finally:
        engine.dispose()
        store.close()


def _waiting_for_a_table(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'relation' AND NOT granted")
        )
        return bool(waiting.scalar_one())


def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


def test_a_repeat_within_one_batch_is_refused(stores: Stores) -> None:
    store = stores.open()
    results = store.append_batch([keyed("c1", 0, "k1"), keyed("c2", 0, "k1"), plain("c3", 0)])
    assert isinstance(results[0], list)
    assert isinstance(results[1], IdempotencyKeyUsed)
    assert results[1].record.aggregate_id == "c1"
    assert isinstance(results[2], list)
    assert store.load("c2") == []


def test_keys_survive_a_restart_and_expired_ones_are_purged(sql_stores: Stores) -> None:
    first = sql_stores.open()
    first.append(keyed("c1", 0, "live"))
    first.append(keyed("c2", 0, "gone", ttl=timedelta(seconds=-1)))
    first.close()
    store = sql_stores.open()
    assert isinstance(store, SqlEventStore)
    keys = store.idempotency_keys
    assert keys.find("live") is not None
    assert keys.find("gone") is None  # expired: as if never recorded
    assert keys.find("never") is None
    assert keys.purge_expired() == 1
    assert keys.purge_expired() == 0
    assert used_record(store, keyed("c1", 1, "live")).version == 1


@pytest.mark.parametrize("same_cart", [True, False], ids=["same-cart", "other-carts"])
def test_stores_racing_with_one_key_apply_it_once(sql_stores: Stores, same_cart: bool) -> None:
    """Like instances sharing one database: one wins, every other is told it lost."""
    contenders = 6
    racers = [sql_stores.open() for _ in range(contenders)]

    def attempt(index: int) -> Any:
        cart = "c1" if same_cart else f"c{index}"
        return racers[index].append(keyed(cart, 0, "k1"))

    outcomes = race(contenders, attempt)
    applied = [o for o in outcomes if isinstance(o, list)]
    assert len(applied) == 1, outcomes
    assert all(isinstance(o, (list, IdempotencyKeyUsed, ConcurrencyError)) for o in outcomes)
    carts = {"c1"} if same_cart else {f"c{i}" for i in range(contenders)}
    written: list[RecordedEvent] = [e for cart in carts for e in racers[0].load(cart)]
    assert len(written) == 1
    # Whoever lost and tries again learns the key was used.
    loser = next(i for i, o in enumerate(outcomes) if not isinstance(o, list))
    cart = "c1" if same_cart else f"c{loser}"
    again = used_record(racers[loser], keyed(cart, 1 if same_cart else 0, "k1"))
    assert again.version == 1


async def test_the_purge_task_deletes_expired_keys_until_stopped(sql_stores: Stores) -> None:
    store = sql_stores.open()
    assert isinstance(store, SqlEventStore)
    store.append(keyed("c1", 0, "gone", ttl=timedelta(seconds=-1)))
    store.append(keyed("c2", 0, "live"))

    def stored_keys() -> set[str]:
        with store.writer.connect() as connection:
            return set(connection.execute(select(idempotency_keys.c.key)).scalars())

    async def unused(cart_id: str, version: int) -> Any:
        raise AssertionError("no replay here")

    commands = IdempotentCommands(store.idempotency_keys, unused)
    stop = asyncio.Event()
    task = asyncio.create_task(commands.purge_until_stopped(stop, every=0.01))
    deadline = time.monotonic() + 10
    while stored_keys() != {"live"}:
        assert time.monotonic() < deadline, f"expired key not purged: {stored_keys()}"
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 10)
