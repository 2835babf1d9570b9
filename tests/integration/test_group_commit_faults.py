"""A group commit in which one bad command fails only itself, and a writer that cannot go on
says so (DESIGN §4): each fault is injected into a real SQLite or PostgreSQL store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from fastapi.testclient import TestClient

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.events import ItemAdded, NewEvent
from microservice_connector.events.codec import EventEncodeError, JsonCodec
from microservice_connector.eventstore import (
    AppendRequest,
    DatabaseUnavailable,
    EventStore,
    GroupCommitStore,
    SqlEventStore,
)
from microservice_connector.eventstore.errors import WriterStopped
from microservice_connector.eventstore.failures import DataRejected
from microservice_connector.eventstore.port import AppendResult
from microservice_connector.settings import Settings

AT = datetime(2024, 5, 1, 12, 30, tzinfo=UTC)
POISON = "poison"
ANSWER_WITHIN_S = 10


def add(cart_id: str, item_id: str = "item-001") -> AppendRequest:
    """Add one item to a new cart."""
    event = NewEvent("ItemAdded", ItemAdded(cart_id, item_id, 1, AT), AT)
    return AppendRequest(cart_id, "ShoppingCart", 0, [event])


async def until(condition: Callable[[], bool], what: str, deadline_s: float = 10) -> None:
    """Return once `condition()` holds; fail after `deadline_s`."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.005)


class PoisonRefusingCodec(JsonCodec):
    """JSON, except that an item called `poison` does not encode."""

    def encode(self, event_type: str, payload: msgspec.Struct) -> bytes:
        if getattr(payload, "item_id", None) == POISON:
            raise EventEncodeError("item 'poison' does not fit the schema")
        return super().encode(event_type, payload)


class WriterKilled(BaseException):
    """What no `except Exception` catches: the kind of fault that ends a thread."""


class FaultyStore:
    """An `EventStore` whose commits can be held at a gate, made to fail, or made to kill
    the thread running them; it remembers the size of every batch it was asked for."""

    def __init__(self, store: EventStore) -> None:
        self.store = store
        self.batch_sizes: list[int] = []
        self.gate_reached = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.failure: BaseException | None = None

    def append_batch(self, requests: Sequence[AppendRequest]) -> list[AppendResult]:
        self.batch_sizes.append(len(requests))
        self.gate_reached.set()
        assert self.gate.wait(timeout=30)
        if self.failure is not None:
            raise self.failure
        return self.store.append_batch(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'events.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def faulty(database_url: str) -> FaultyStore:
    return FaultyStore(SqlEventStore(database_url, codec=PoisonRefusingCodec()))


@pytest.fixture
def grouped(faulty: FaultyStore) -> Iterator[GroupCommitStore]:
    grouped = GroupCommitStore(faulty)
    yield grouped
    faulty.gate.set()
    grouped.close()


async def in_one_group(
    grouped: GroupCommitStore, faulty: FaultyStore, requests: Sequence[AppendRequest]
) -> list[Any]:
    """Append `requests` so that they reach the writer together: a first append holds the
    writer at the gate while they queue behind it. Their outcomes, in order."""
    faulty.gate.clear()
    first = asyncio.ensure_future(grouped.append(add("cart-first")))
    await asyncio.to_thread(faulty.gate_reached.wait, 30)
    queued = [asyncio.ensure_future(grouped.append(request)) for request in requests]
    await asyncio.sleep(0)  # let every task hand its append to the writer's queue
    faulty.gate.set()
    answered = asyncio.gather(first, *queued, return_exceptions=True)
    return (await asyncio.wait_for(answered, ANSWER_WITHIN_S))[1:]


async def test_an_event_that_does_not_encode_fails_only_its_own_command(
    grouped: GroupCommitStore, faulty: FaultyStore
) -> None:
    carts = [f"cart-{n}" for n in range(20)]
    requests = [add(cart, POISON if cart == "cart-7" else "item-001") for cart in carts]

    outcomes = await in_one_group(grouped, faulty, requests)

    assert 20 in faulty.batch_sizes, faulty.batch_sizes  # they were one group
    assert isinstance(outcomes[7], EventEncodeError)
    stored = {
        cart for cart, outcome in zip(carts, outcomes, strict=True) if isinstance(outcome, list)
    }
    assert stored == set(carts) - {"cart-7"}
    assert {event.aggregate_id for event in faulty.store.read_all(limit=100)} == stored | {
        "cart-first"
    }
    await grouped.ping()  # a bad command says nothing about the writer


@pytest.mark.postgres
async def test_data_the_database_refuses_fails_only_its_own_command(postgres_url: str) -> None:
    faulty = FaultyStore(SqlEventStore(postgres_url))
    grouped = GroupCommitStore(faulty)
    try:
        refused = AppendRequest("cart-3", "Shopping\x00Cart", 0, add("cart-3").events)
        requests = [refused if n == 3 else add(f"cart-{n}") for n in range(8)]

        outcomes = await in_one_group(grouped, faulty, requests)
    finally:
        grouped.close()

    assert isinstance(outcomes[3], DataRejected)
    assert "refused the data" in str(outcomes[3])
    assert [isinstance(outcome, list) for outcome in outcomes] == [n != 3 for n in range(8)]


async def test_a_commit_listener_that_raises_does_not_stop_the_writer(
    grouped: GroupCommitStore,
) -> None:
    calls = []

    def broken_listener() -> None:
        calls.append(1)
        raise RuntimeError("a bug in a listener")

    grouped.on_commit(broken_listener)

    first = await asyncio.wait_for(grouped.append(add("cart-1")), ANSWER_WITHIN_S)
    second = await asyncio.wait_for(grouped.append(add("cart-2")), ANSWER_WITHIN_S)

    assert [first[0].version, second[0].version] == [1, 1]
    await until(lambda: len(calls) == 2, "the listener heard of both commits")
    await grouped.ping()


async def test_a_writer_that_dies_answers_every_caller_and_refuses_new_commands(
    grouped: GroupCommitStore, faulty: FaultyStore
) -> None:
    faulty.failure = WriterKilled("the writer thread was killed")

    outcomes = await in_one_group(grouped, faulty, [add(f"cart-{n}") for n in range(5)])

    assert all(isinstance(outcome, WriterStopped) for outcome in outcomes), outcomes
    with pytest.raises(WriterStopped, match="writer stopped: WriterKilled"):
        await asyncio.wait_for(grouped.append(add("cart-later")), ANSWER_WITHIN_S)
    with pytest.raises(DatabaseUnavailable, match="event store writer stopped"):
        await grouped.ping()


async def test_a_listener_that_kills_the_writer_still_answers_its_commit(
    grouped: GroupCommitStore,
) -> None:
    def killing_listener() -> None:
        raise WriterKilled("listener ended the thread")

    grouped.on_commit(killing_listener)

    committed = await asyncio.wait_for(grouped.append(add("cart-1")), ANSWER_WITHIN_S)

    assert committed[0].version == 1
    with pytest.raises(WriterStopped):
        await asyncio.wait_for(grouped.append(add("cart-2")), ANSWER_WITHIN_S)


async def test_failing_commits_turn_the_writer_check_red_until_one_succeeds(
    grouped: GroupCommitStore, faulty: FaultyStore
) -> None:
    faulty.failure = DatabaseUnavailable("database events.db unavailable: database or disk is full")

    with pytest.raises(DatabaseUnavailable, match="disk is full"):
        await asyncio.wait_for(grouped.append(add("cart-1")), ANSWER_WITHIN_S)
    with pytest.raises(DatabaseUnavailable, match="event store writer: commits fail") as red:
        await grouped.ping()
    assert "disk is full" in str(red.value)

    faulty.failure = None
    await asyncio.wait_for(grouped.append(add("cart-1")), ANSWER_WITHIN_S)
    await grouped.ping()


class KillWriter:
    """A commit listener that ends the writer thread once armed."""

    armed = False

    def __call__(self) -> None:
        if self.armed:
            raise WriterKilled("a fault in the writer thread")


def test_readyz_names_the_stopped_writer_and_commands_get_503_at_once(tmp_path: Path) -> None:
    app = build_cart_app(Settings(data_dir=tmp_path), relay=False)
    kill = KillWriter()
    app.state.event_store.on_commit(kill)
    with TestClient(app) as client:
        body = {"item_id": "item-001", "quantity": 1}
        assert client.post("/carts/cart-1/items", json=body).status_code == 200
        assert client.get("/readyz").status_code == 200
        kill.armed = True
        assert client.post("/carts/cart-2/items", json=body).status_code == 200  # committed

        ready = client.get("/readyz")
        refused = client.post("/carts/cart-3/items", json=body)

    assert ready.status_code == 503
    assert "database: event store writer stopped: WriterKilled" in ready.json()["detail"]
    assert refused.status_code == 503
    assert "event store writer stopped" in refused.json()["detail"]
