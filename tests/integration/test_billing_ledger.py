"""The ledger on a real SQLite billing database: exactly-once effect in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from microservice_connector.billing_service.application import BillingLedger, CartEventIn, Outcome
from microservice_connector.billing_service.domain import Price
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.infrastructure.tables import DEFAULT_PRICES
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.cart import CartCheckedOut, ItemAdded, ItemRemoved
from microservice_connector.settings import Settings

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[SqlBillingRepository]:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    yield repository
    repository.close()


def added(
    cart: str, version: int, item: str = "item-001", quantity: int = 1, at: datetime = NOW
) -> CartEventIn:
    return CartEventIn(f"{cart}-{version}", cart, version, ItemAdded(cart, item, quantity, at))


def test_a_batch_in_any_order_applies_each_version_once(repository: SqlBillingRepository) -> None:
    ledger = BillingLedger(repository)
    batch = [added("c", 2), added("c", 1), added("c", 1), added("c", 4)]
    assert ledger.apply_batch(batch) == [
        Outcome.APPLIED,
        Outcome.APPLIED,
        Outcome.DUPLICATE,
        Outcome.DEFERRED,
    ]
    bill = repository.bill("c")
    assert bill is not None
    assert (bill.last_version, bill.lines["item-001"].quantity) == (2, 2)
    assert ledger.apply_batch([added("c", 2), added("c", 3), added("c", 4)]) == [
        Outcome.DUPLICATE,
        Outcome.APPLIED,
        Outcome.APPLIED,
    ]
    assert repository.bill("c").lines["item-001"].quantity == 4  # type: ignore[union-attr]


def test_checkout_issues_one_invoice_and_one_outbox_row(repository: SqlBillingRepository) -> None:
    ledger = BillingLedger(repository)
    checkout = CartEventIn("c-3", "c", 3, CartCheckedOut("c", NOW))
    ledger.apply_batch([added("c", 1, "item-001", 2), added("c", 2, "nothing-priced", 5), checkout])
    ledger.apply_batch([checkout])  # redelivered
    invoice = repository.invoice("c")
    assert invoice is not None
    assert invoice.total_cents == 2 * 1999
    assert invoice.lines["nothing-priced"].unpriced
    assert ledger.invoices_issued == 1
    [row] = [
        row
        for row in repository.store.outbox.pending()
        if row.headers["event-type"] == "InvoiceIssued"
    ]
    assert (row.topic, row.key) == ("billing.events", invoice.invoice_id)
    assert invoice.issued_at == NOW  # the checkout's own time, so a rebuild dates it the same


def test_a_price_change_applies_to_cart_events_from_its_moment_on(
    repository: SqlBillingRepository,
) -> None:
    ledger = BillingLedger(repository)
    ledger.apply_batch([added("c", 1, "item-009", 1)])
    assert repository.bill("c").lines["item-009"].unpriced  # type: ignore[union-attr]
    assert repository.set_price("item-009", 300) == Price(300, 1)
    assert repository.prices()["item-009"] == Price(300, 1)
    later = datetime.now(UTC) + timedelta(seconds=1)
    ledger.apply_batch([added("c", 2, "item-009", 1, at=NOW), added("d", 1, "item-009", 1, later)])
    early = repository.bill("c").lines["item-009"]  # type: ignore[union-attr]
    assert (early.quantity, early.unpriced) == (2, True)  # its event predates the price
    line = repository.bill("d").lines["item-009"]  # type: ignore[union-attr]
    assert (line.quantity, line.unit_price_cents, line.price_version) == (1, 300, 1)


def test_seeded_prices_are_events_of_version_1(repository: SqlBillingRepository) -> None:
    changes = [
        recorded.aggregate_id
        for recorded in repository.store.read_all(0, 100)
        if recorded.event_type == "PriceChanged"
    ]
    assert sorted(changes) == [f"price-{item}" for item in sorted(DEFAULT_PRICES)]
    assert repository.prices()["item-001"] == Price(1999, 1)


def test_reset_read_model_keeps_prices(repository: SqlBillingRepository) -> None:
    BillingLedger(repository).apply_batch([added("c", 1)])
    repository.set_price("item-001", 2500)
    repository.reset_read_model()
    assert repository.bill("c") is None
    assert repository.prices()["item-001"] == Price(2500, 2)


def test_a_removal_without_its_add_is_deferred(repository: SqlBillingRepository) -> None:
    removed = CartEventIn("c-2", "c", 2, ItemRemoved("c", "item-001", 1, NOW))
    assert BillingLedger(repository).apply_batch([removed]) == [Outcome.DEFERRED]
