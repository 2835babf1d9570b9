"""The ledger on a real SQLite billing database: exactly-once effect in one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from microservice_connector.billing_service.application import BillingLedger, CartEventIn, Outcome
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.cart import CartCheckedOut, ItemAdded, ItemRemoved
from microservice_connector.settings import Settings

NOW = datetime(2026, 11, 25, tzinfo=UTC)


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[SqlBillingRepository]:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    yield repository
    repository.store.close()


def added(cart: str, version: int, item: str = "item-001", quantity: int = 1) -> CartEventIn:
    return CartEventIn(f"{cart}-{version}", cart, version, ItemAdded(cart, item, quantity, NOW))


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
    status = repository.store.outbox.status()
    assert status.pending == 1
    [row] = repository.store.outbox.pending()
    assert (row.topic, row.headers["event-type"], row.key) == (
        "billing.events",
        "InvoiceIssued",
        invoice.invoice_id,
    )


def test_prices_can_change_and_reprice_lines_as_they_change(
    repository: SqlBillingRepository,
) -> None:
    ledger = BillingLedger(repository)
    ledger.apply_batch([added("c", 1, "item-009", 1)])
    assert repository.bill("c").lines["item-009"].unpriced  # type: ignore[union-attr]
    repository.set_price("item-009", 300)
    assert repository.prices()["item-009"] == 300
    ledger.apply_batch([added("c", 2, "item-009", 1)])
    line = repository.bill("c").lines["item-009"]  # type: ignore[union-attr]
    assert (line.quantity, line.unit_price_cents, line.unpriced) == (2, 300, False)


def test_reset_read_model_keeps_prices(repository: SqlBillingRepository) -> None:
    BillingLedger(repository).apply_batch([added("c", 1)])
    repository.reset_read_model()
    assert repository.bill("c") is None
    assert repository.prices()["item-001"] == 1999


def test_a_removal_without_its_add_is_deferred(repository: SqlBillingRepository) -> None:
    removed = CartEventIn("c-2", "c", 2, ItemRemoved("c", "item-001", 1, NOW))
    assert BillingLedger(repository).apply_batch([removed]) == [Outcome.DEFERRED]
