"""Billing heals from the cart store: gap repair fills an early event's missing versions,
feed catch-up applies what the broker never brought, its position saved with the bills (on
SQLite and PostgreSQL). The cart store is a small HTTP app holding the events a test gives
it, so the store can also lack a version or answer nonsense."""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException

from microservice_connector.billing_service.application import BillingLedger, CartEventIn
from microservice_connector.billing_service.domain import Bill
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.infrastructure.cart_store import (
    CartStore,
    read_headers,
)
from microservice_connector.billing_service.infrastructure.feed_catch_up import FeedCatchUp
from microservice_connector.billing_service.infrastructure.feed_position import saved_position
from microservice_connector.billing_service.infrastructure.feed_watermark import FeedWatermark
from microservice_connector.billing_service.infrastructure.gap_repair import GapRepair
from microservice_connector.billing_service.infrastructure.handling_log import HandlingLog
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.infrastructure.store_events import StoreEventApplier
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.registry import default_registry
from microservice_connector.eventstore.failures import DataRejected
from microservice_connector.messaging.consumer import Reject, Retry
from microservice_connector.messaging.memory import InMemoryBroker, InMemoryDeadLetters
from microservice_connector.messaging.message import Delivery, Message
from microservice_connector.settings import Settings

OLD = datetime(2026, 11, 25, tzinfo=UTC)  # long settled: catch-up takes it


class FakeCartStore:
    """The cart service's read routes over a list of stored events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.app = FastAPI()

        @self.app.get("/carts/{cart_id}/events")
        def cart_events(cart_id: str, after_version: int = 0) -> dict[str, Any]:
            self.requests.append(f"/carts/{cart_id}/events?after_version={after_version}")
            mine = [e for e in self.events if e["aggregate_id"] == cart_id]
            if not mine:
                raise HTTPException(404, f"cart {cart_id} not found")
            return {"cart_id": cart_id, "events": [e for e in mine if e["version"] > after_version]}

        @self.app.get("/events")
        def feed(after: int = 0, limit: int = 100) -> dict[str, Any]:
            self.requests.append(f"/events?after={after}")
            page = [e for e in self.events if e["position"] > after][:limit]
            return {"events": page, "next_after": page[-1]["position"] if page else after}

    def add(self, cart_id: str, item: str = "item-001", *, at: datetime = OLD) -> dict[str, Any]:
        """Store one `ItemAdded` as the cart's next version; returns the feed entry."""
        version = 1 + sum(e["aggregate_id"] == cart_id for e in self.events)
        entry = {
            "position": len(self.events) + 1,
            "event_id": f"{cart_id}-v{version}",
            "aggregate_id": cart_id,
            "aggregate_type": "ShoppingCart",
            "version": version,
            "event_type": "ItemAdded",
            "schema_version": 1,
            "content_type": "application/json",
            "correlation_id": None,
            "causation_id": None,
            "timestamp": at.isoformat(),
            "data": {
                "cart_id": cart_id,
                "item_id": item,
                "quantity": 1,
                "timestamp": at.isoformat(),
            },
        }
        self.events.append(entry)
        return entry

    def client(self) -> CartStore:
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://cart"
        )
        return CartStore(http, default_registry())


@pytest.fixture
def repository(billing_repository: SqlBillingRepository) -> SqlBillingRepository:
    """Billing's database, on SQLite and then PostgreSQL (conftest's `billing_repository`)."""
    return billing_repository


def incoming(entry: dict[str, Any]) -> CartEventIn:
    """The event as the broker would have brought it."""
    data = entry["data"]
    event = ItemAdded(data["cart_id"], data["item_id"], data["quantity"], OLD)
    return CartEventIn(entry["event_id"], entry["aggregate_id"], entry["version"], event)


def delivery_of(entry: dict[str, Any], attempt: int = 1, *, positioned: bool = False) -> Delivery:
    """The broker's delivery of `entry`; `positioned`: with the feed position header the
    relay adds."""

    async def settle(*_: object) -> None:
        return None

    headers = {
        "event-id": entry["event_id"],
        "event-type": entry["event_type"],
        "aggregate-id": entry["aggregate_id"],
        "aggregate-version": str(entry["version"]),
    }
    if positioned:
        headers["position"] = str(entry["position"])
    payload = httpx.Response(200, json=entry["data"]).content
    message = Message(id=entry["event_id"], topic="cart.events", payload=payload, headers=headers)
    return Delivery(message, attempt, entry["position"], settle, settle)


def last_version(repository: SqlBillingRepository, cart_id: str) -> int:
    stamp = repository.stamp(cart_id)
    return stamp.last_version if stamp else 0


@contextmanager
def healing(
    repository: SqlBillingRepository,
    store: FakeCartStore,
    *,
    grace_s: float = 0.0,
    watermark: FeedWatermark | None = None,
) -> Iterator[tuple[CartEventHandler, FeedCatchUp, InMemoryBroker, HandlingLog]]:
    """A handler with gap repair and a catch-up, over `store`, sharing `watermark` when
    given; dead letters in memory."""
    ledger, handled, broker = BillingLedger(repository), HandlingLog(), InMemoryBroker()
    applier = StoreEventApplier(ledger, handled)
    client = store.client()
    repair = GapRepair(
        applier, client, lambda cart: last_version(repository, cart), grace_s=grace_s
    )
    handler = CartEventHandler(
        ledger, default_registry(), handled, repair=repair, watermark=watermark
    )

    async def dead_letters() -> InMemoryDeadLetters:
        return InMemoryDeadLetters(broker)

    catch_up = FeedCatchUp(
        applier,
        client,
        lambda: saved_position(repository),
        dead_letters,
        handled,
        repository.last_versions,
        watermark=watermark,
    )
    yield handler, catch_up, broker, handled


def test_an_early_event_past_its_grace_gets_its_gap_filled_from_the_store(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    first, lost, early = store.add("c"), store.add("c", "item-002"), store.add("c", "item-003")
    with healing(repository, store, grace_s=3600) as (handler, _, _, handled):
        BillingLedger(repository).apply_batch([incoming(first)])
        waiting = asyncio.run(handler([delivery_of(early)]))
        assert isinstance(waiting[0], Retry)
        assert store.requests == []  # within the grace: the broker may yet bring it

    with healing(repository, store, grace_s=0.0) as (handler, _, _, handled):
        repaired = asyncio.run(handler([delivery_of(early)]))
        again = asyncio.run(handler([delivery_of(early, attempt=2)]))

    assert isinstance(repaired[0], Retry)
    assert not repaired[0].failure
    assert store.requests == ["/carts/c/events?after_version=1"]
    bill = repository.bill("c")
    assert bill is not None
    assert bill.last_version == 3
    assert set(bill.lines) == {"item-001", "item-002", "item-003"}
    assert len(again) == 1
    assert getattr(again[0], "label", None) == "duplicate"
    lost_handling = handled.get(lost["event_id"])
    assert lost_handling is not None
    assert lost_handling.applied_via == "repair"


def test_an_early_event_is_dead_lettered_only_when_the_store_lacks_the_version(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    first = store.add("c")
    forged = {**first, "event_id": "c-v3", "version": 3, "position": 3}
    with healing(repository, store) as (handler, _, _, _):
        BillingLedger(repository).apply_batch([incoming(first)])
        [settlement] = asyncio.run(handler([delivery_of(forged)]))
    assert isinstance(settlement, Reject)
    assert "version 2 is missing from the store itself" in settlement.reason


def test_a_wrong_cart_url_never_passes_for_a_store_that_lacks_the_cart(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    store.app.router.routes.clear()  # a server that is not the cart service: 404 everywhere
    with healing(repository, store) as (handler, _, _, _):
        [settlement] = asyncio.run(handler([delivery_of(store.add("c") | {"version": 2})]))
    assert isinstance(settlement, Retry)  # it keeps waiting: nothing is dead-lettered
    assert not settlement.failure


def test_catch_up_applies_what_the_broker_never_brought_and_remembers_how_far_it_got(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    delivered = store.add("a")
    for entry in (store.add("a", "item-002"), store.add("b"), store.add("a", "item-003")):
        assert entry  # lost by the broker: no later event shows the gap
    with healing(repository, store) as (_, catch_up, broker, handled):
        BillingLedger(repository).apply_batch([incoming(delivered)])
        assert asyncio.run(catch_up.catch_up()) == 3
        store.requests.clear()
        assert asyncio.run(catch_up.catch_up()) == 0
    assert store.requests == ["/events?after=4"]  # nothing new: one cheap read
    assert saved_position(repository) == 4
    assert repository.bill("a").last_version == 3  # type: ignore[union-attr]
    assert repository.bill("b").last_version == 1  # type: ignore[union-attr]
    assert broker.dead_letters(10) == []
    assert handled.get("b-v1").applied_via == "catch-up"  # type: ignore[union-attr]


class BillsReadInTransactions:
    """The repository's units of work, noting which carts' bills each one read."""

    def __init__(self, repository: SqlBillingRepository) -> None:
        self.carts: list[set[str]] = []
        self._opened = repository.transaction
        repository.transaction = self._transaction  # type: ignore[method-assign]

    def _transaction(self) -> Any:
        uow = self._opened()
        read = uow.get_bills
        self.carts.append(set())

        def noted(cart_ids: Any) -> Any:
            self.carts[-1].update(cart_ids)
            return read(cart_ids)

        uow.get_bills = noted  # type: ignore[method-assign]
        return uow


def test_catch_up_passes_over_what_the_broker_brought_without_a_transaction_of_its_own(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    delivered = [store.add(cart) for cart in ("a", "b", "c")] + [store.add("a", "item-002")]
    lost = store.add("d")
    BillingLedger(repository).apply_batch([incoming(entry) for entry in delivered])
    read = BillsReadInTransactions(repository)
    with healing(repository, store) as (_, catch_up, _, handled):
        assert asyncio.run(catch_up.catch_up()) == 1
    assert read.carts == [{"d"}]  # the lost event's transaction, with the position
    assert saved_position(repository) == 5
    assert handled.get(lost["event_id"]).applied_via == "catch-up"  # type: ignore[union-attr]
    read.carts.clear()
    BillingLedger(repository).apply_batch([incoming(store.add("e"))])
    with healing(repository, store) as (_, catch_up, _, _):
        assert asyncio.run(catch_up.catch_up()) == 0
    assert read.carts == [{"e"}, set()]  # the broker's batch, then the position alone
    assert saved_position(repository) == 6


def test_catch_up_starts_after_what_the_broker_brought_without_a_hole(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    delivered = [store.add(cart) for cart in ("a", "b", "c")] + [store.add("a", "item-002")]
    lost = store.add("d")  # the broker's last: no later event shows it missing
    watermark = FeedWatermark()
    with healing(repository, store, watermark=watermark) as (handler, catch_up, _, handled):
        settled = asyncio.run(handler([delivery_of(e, positioned=True) for e in delivered]))
        assert [type(settlement).__name__ for settlement in settled] == ["Ack"] * 4
        assert watermark.through == 4
        assert asyncio.run(catch_up.catch_up()) == 1

    assert store.requests == ["/events?after=4"]  # not one of the four read again
    assert saved_position(repository) == 5
    assert handled.get(lost["event_id"]).applied_via == "catch-up"  # type: ignore[union-attr]


def test_a_message_the_broker_lost_holds_the_watermark_so_catch_up_reads_from_there(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    entries = [store.add(cart) for cart in ("a", "b", "c")] + [store.add("a", "item-002")]
    watermark = FeedWatermark()
    with healing(repository, store, watermark=watermark) as (handler, catch_up, _, _):
        brought = [delivery_of(entries[i], positioned=True) for i in (0, 1, 3)]
        asyncio.run(handler(brought))
        assert watermark.through == 2  # 3 never came
        assert asyncio.run(catch_up.catch_up()) == 1

    assert store.requests[0] == "/events?after=2"
    assert repository.bill("c").last_version == 1  # type: ignore[union-attr]
    assert saved_position(repository) == 4
    assert watermark.through == 4


def test_messages_without_a_position_leave_catch_up_where_it_was(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    entries = [store.add(cart) for cart in ("a", "b")]
    watermark = FeedWatermark()
    with healing(repository, store, watermark=watermark) as (handler, catch_up, _, _):
        asyncio.run(handler([delivery_of(entry) for entry in entries]))  # published before
        assert watermark.through == 0
        assert asyncio.run(catch_up.catch_up()) == 0  # both passed over: bills are there

    assert store.requests[0] == "/events?after=0"
    assert saved_position(repository) == 2


def test_catch_up_leaves_young_events_to_the_broker(repository: SqlBillingRepository) -> None:
    store = FakeCartStore()
    store.add("a")
    store.add("b", at=datetime.now(UTC) + timedelta(seconds=1))
    store.add("c")
    with healing(repository, store) as (_, catch_up, _, _):
        assert asyncio.run(catch_up.catch_up()) == 1
    assert saved_position(repository) == 1
    assert repository.bill("c") is None  # after the young one: next round


class RejectingCart:
    """A repository whose transactions refuse any bill of `cart_id`, as a database refuses a
    value that does not fit."""

    def __init__(self, real: SqlBillingRepository, cart_id: str) -> None:
        self._real, self._cart_id = real, cart_id

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        with self._real.transaction() as tx:
            yield _Refusing(tx, self._cart_id)


class _Refusing:
    def __init__(self, tx: Any, cart_id: str) -> None:
        self._tx, self._cart_id = tx, cart_id

    def save_bills(self, bills: Collection[Bill]) -> None:
        if any(bill.cart_id == self._cart_id for bill in bills):
            raise DataRejected(f"value too long for cart {self._cart_id}")
        self._tx.save_bills(bills)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


def test_one_cart_failing_for_good_is_dead_lettered_and_the_others_caught_up(
    repository: SqlBillingRepository,
) -> None:
    store = FakeCartStore()
    store.add("a")
    store.add("bad")
    store.add("b")
    ledger, handled, broker = (
        BillingLedger(RejectingCart(repository, "bad")),
        HandlingLog(),
        InMemoryBroker(),
    )

    async def dead_letters() -> InMemoryDeadLetters:
        return InMemoryDeadLetters(broker)

    catch_up = FeedCatchUp(
        StoreEventApplier(ledger, handled),
        store.client(),
        lambda: saved_position(repository),
        dead_letters,
        handled,
        repository.last_versions,
    )
    assert asyncio.run(catch_up.catch_up()) == 2
    [letter] = broker.dead_letters(10)
    assert letter.message.id == "bad-v1"
    assert "value too long" in letter.error
    assert saved_position(repository) == 3
    assert repository.bill("b") is not None
    assert repository.bill("bad") is None


def test_the_store_is_read_with_the_api_token_when_one_is_set() -> None:
    assert read_headers(Settings(api_token="s3cret")) == {"Authorization": "Bearer s3cret"}
    assert read_headers(Settings()) == {}


@pytest.mark.parametrize("cart_id", [".", "..", "a.b:c", "-"])
def test_the_store_is_asked_for_the_cart_itself_whatever_its_id(cart_id: str) -> None:
    store = FakeCartStore()
    store.add("events")  # what `/carts/./events` would read if the id were folded away
    entry = store.add(cart_id)

    found = asyncio.run(store.client().events_after(cart_id, 0))

    assert [(event.cart_id, event.version) for event in found] == [(cart_id, 1)]
    assert store.requests == [f"/carts/{cart_id}/events?after_version=0"]
    assert entry["aggregate_id"] == cart_id
