"""Two billing instances on one PostgreSQL database: whichever receives which event, and
however their transactions interleave, every bill is exact and every invoice issued once."""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest

from microservice_connector.billing_service.application import (
    BillingLedger,
    CartEventIn,
    ConcurrentBillUpdate,
    Outcome,
)
from microservice_connector.billing_service.domain import Bill
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.infrastructure.tables import DEFAULT_PRICES
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.cart import CartCheckedOut, ItemAdded, ItemRemoved
from microservice_connector.events.registry import default_registry
from microservice_connector.messaging.consumer import Retry
from microservice_connector.settings import Settings
from support.cart_deliveries import item_added

NOW = datetime(2026, 11, 25, tzinfo=UTC)
PAUSE_LIMIT_S = 10.0


@pytest.fixture
def instances(postgres_url: str) -> Iterator[tuple[SqlBillingRepository, SqlBillingRepository]]:
    """Two billing instances' repositories on the same PostgreSQL database."""
    settings = Settings(billing_database_url=postgres_url)
    first, second = open_billing_repository(settings), open_billing_repository(settings)
    yield first, second
    first.close()
    second.close()


def added(cart: str, version: int, quantity: int = 1) -> CartEventIn:
    return CartEventIn(
        f"{cart}-{version}", cart, version, ItemAdded(cart, "item-001", quantity, NOW)
    )


def checked_out(cart: str, version: int) -> CartEventIn:
    return CartEventIn(f"{cart}-{version}", cart, version, CartCheckedOut(cart, NOW))


class PausedAfterReading:
    """A repository whose first transaction stops after reading bills until `resume`, so
    another instance can commit in between: the interleaving that loses updates."""

    def __init__(self, real: SqlBillingRepository) -> None:
        self._real = real
        self.has_read = threading.Event()
        self.resume = threading.Event()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        first = not self.has_read.is_set()
        with self._real.transaction() as tx:
            yield _Pausing(tx, self) if first else tx


class _Pausing:
    def __init__(self, tx: Any, owner: PausedAfterReading) -> None:
        self._tx, self._owner = tx, owner

    def get_bills(self, cart_ids: Collection[str]) -> dict[str, Bill]:
        found: dict[str, Bill] = self._tx.get_bills(cart_ids)
        self._owner.has_read.set()
        assert self._owner.resume.wait(PAUSE_LIMIT_S), "never resumed"
        return found

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tx, name)


def race(
    paused_ledger: BillingLedger,
    repository: PausedAfterReading,
    paused_batch: list[CartEventIn],
    other: BillingLedger,
    other_batch: list[CartEventIn],
) -> tuple[list[Outcome], list[Outcome]]:
    """The paused ledger reads, the other applies and commits, then the paused one goes on."""
    outcomes: list[Outcome] = []
    thread = threading.Thread(
        target=lambda: outcomes.extend(paused_ledger.apply_batch(paused_batch))
    )
    thread.start()
    try:
        assert repository.has_read.wait(PAUSE_LIMIT_S)
        other_outcomes = other.apply_batch(other_batch)
    finally:
        repository.resume.set()
        thread.join()
    return outcomes, other_outcomes


def test_an_instance_that_read_a_bill_before_another_committed_does_not_overwrite_it(
    instances: tuple[SqlBillingRepository, SqlBillingRepository],
) -> None:
    first, second = instances
    slow = PausedAfterReading(first)
    slow_ledger, fast_ledger = BillingLedger(slow), BillingLedger(second)
    fast_ledger.apply_batch([added("c", 1), added("c", 2), added("c", 3)])

    slow_outcomes, fast_outcomes = race(
        slow_ledger, slow, [added("c", 4)], fast_ledger, [added("c", 4), added("c", 5)]
    )

    assert fast_outcomes == [Outcome.APPLIED, Outcome.APPLIED]
    assert slow_outcomes == [Outcome.DUPLICATE]  # re-run on the committed bill
    bill = second.bill("c")
    assert bill is not None
    assert (bill.last_version, bill.lines["item-001"].quantity) == (5, 5)


def test_two_instances_checking_out_one_cart_issue_one_invoice(
    instances: tuple[SqlBillingRepository, SqlBillingRepository],
) -> None:
    first, second = instances
    slow = PausedAfterReading(first)
    slow_ledger, fast_ledger = BillingLedger(slow), BillingLedger(second)
    events = [added("c", 1, 2), added("c", 2), checked_out("c", 3)]

    slow_outcomes, fast_outcomes = race(slow_ledger, slow, events, fast_ledger, events)

    assert fast_outcomes == [Outcome.APPLIED] * 3
    assert slow_outcomes == [Outcome.DUPLICATE] * 3
    assert (slow_ledger.invoices_issued, fast_ledger.invoices_issued) == (0, 1)
    invoice = first.invoice("c")
    assert invoice is not None
    assert invoice.total_cents == 3 * DEFAULT_PRICES["item-001"]
    assert invoices_announced(first) == 1


class SharedConsumer:
    """A durable consumer shared by instances: batches go to whoever fetches, every event is
    delivered at least once (some twice), and what is not acked comes back later."""

    def __init__(self, events: list[CartEventIn], seed: int) -> None:
        self._random = random.Random(seed)
        deliveries = events + self._random.sample(events, len(events) // 3)
        self._random.shuffle(deliveries)
        self._queue = deliveries
        self._unacked = Counter(event.event_id for event in events)
        self._in_flight = 0
        self._lock = threading.Lock()

    def fetch(self) -> list[CartEventIn]:
        with self._lock:
            size = self._random.randint(1, 12)
            batch, self._queue = self._queue[:size], self._queue[size:]
            self._in_flight += len(batch)
            return batch

    def settle(self, batch: list[CartEventIn], outcomes: list[Outcome] | None) -> None:
        """Ack applied and duplicate events; put the others back (a nak)."""
        with self._lock:
            self._in_flight -= len(batch)
            for index, event in enumerate(batch):
                if outcomes is not None and outcomes[index] is not Outcome.DEFERRED:
                    self._unacked[event.event_id] = 0
                else:
                    self._queue.append(event)

    def done(self) -> bool:
        with self._lock:
            return not self._in_flight and not +self._unacked


def carts_and_model(count: int, seed: int) -> tuple[list[CartEventIn], dict[str, int]]:
    """Random carts (adds, removes, most checked out) and each cart's expected total."""
    rng = random.Random(seed)
    events: list[CartEventIn] = []
    totals: dict[str, int] = {}
    items = ["item-001", "item-002", "item-003"]
    for n in range(count):
        cart, held = f"cart-{n}", Counter[str]()
        for version in range(1, rng.randint(2, 8)):
            item = rng.choice(items)
            if held[item] and rng.random() < 0.3:
                quantity = rng.randint(1, held[item])
                held[item] -= quantity
                event: Any = ItemRemoved(cart, item, quantity, NOW)
            else:
                quantity = rng.randint(1, 3)
                held[item] += quantity
                event = ItemAdded(cart, item, quantity, NOW)
            events.append(CartEventIn(f"{cart}-{version}", cart, version, event))
        if rng.random() < 0.7:
            events.append(checked_out(cart, version + 1))
        totals[cart] = sum(DEFAULT_PRICES[item] * quantity for item, quantity in held.items())
    return events, totals


def test_two_instances_sharing_a_consumer_keep_every_bill_exact(
    instances: tuple[SqlBillingRepository, SqlBillingRepository],
) -> None:
    events, totals = carts_and_model(40, seed=9)
    consumer = SharedConsumer(events, seed=9)
    ledgers = [BillingLedger(repository) for repository in instances]
    conflicts = Counter[int]()
    failures: list[BaseException] = []

    def work(index: int) -> None:
        try:
            while not consumer.done():
                batch = consumer.fetch()
                if not batch:
                    continue
                try:
                    outcomes: list[Outcome] | None = ledgers[index].apply_batch(batch)
                except ConcurrentBillUpdate:
                    conflicts[index] += 1
                    outcomes = None
                consumer.settle(batch, outcomes)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not failures, failures
    assert consumer.done(), "the instances stopped before every event was applied"

    first = instances[0]
    assert first.summary() == totals
    checked = {event.cart_id for event in events if isinstance(event.event, CartCheckedOut)}
    invoices = {cart: first.invoice(cart) for cart in totals}
    assert {cart for cart, invoice in invoices.items() if invoice is not None} == checked
    for cart in checked:
        assert invoices[cart].total_cents == totals[cart]  # type: ignore[union-attr]
    assert sum(ledger.invoices_issued for ledger in ledgers) == len(checked)
    assert invoices_announced(first) == len(checked)


class AlwaysLosing:
    """A ledger whose batches keep losing to other instances."""

    def apply_batch(self, events: Sequence[CartEventIn]) -> list[Outcome]:
        raise ConcurrentBillUpdate("bills changed by another instance meanwhile")


async def test_a_batch_that_keeps_losing_is_redelivered_without_counting_as_a_failure() -> None:
    handler = CartEventHandler(AlwaysLosing(), default_registry())  # type: ignore[arg-type]
    deliveries = [item_added("c-1", version) for version in (1, 2)]
    settlements = await handler(deliveries)
    assert [type(s) for s in settlements] == [Retry, Retry]
    assert all(not s.failure for s in settlements)  # type: ignore[union-attr]


def invoices_announced(repository: SqlBillingRepository) -> int:
    """How many `InvoiceIssued` wait in billing's outbox (beside its `PriceChanged`)."""
    rows = repository.store.outbox.pending(10_000)
    return sum(row.headers["event-type"] == "InvoiceIssued" for row in rows)
