"""Billing's unit of work on SQLite and PostgreSQL: what is done inside one commits at once
or not at all (bill, invoice, its `InvoiceIssued` event and outbox row, feed position), and
what it committed is visible to billing's reads while the block still runs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from microservice_connector.billing_service.application import BillingLedger, CartEventIn
from microservice_connector.billing_service.domain import Bill
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.infrastructure.unit_of_work import (
    SqlBillingUnitOfWork,
)
from microservice_connector.events.cart import CartCheckedOut, ItemAdded

NOW = datetime(2026, 11, 25, tzinfo=UTC)


class Interrupted(Exception):
    """The work inside the unit of work failed half-way."""


def checked_out_bill(billing_repository: SqlBillingRepository, cart_id: str) -> Bill:
    """A cart with two item-001 in it, applied and committed by the ledger, then checked out
    (in memory only: the caller stores it)."""
    added = ItemAdded(cart_id, "item-001", 2, NOW)
    BillingLedger(billing_repository).apply_batch([CartEventIn(f"{cart_id}-1", cart_id, 1, added)])
    bill = billing_repository.bill(cart_id)
    assert bill is not None
    bill.apply(CartCheckedOut(cart_id, NOW), 2, lambda item, at: None)
    return bill


def invoice_announcements(
    billing_repository: SqlBillingRepository, invoice_id: str
) -> tuple[int, int]:
    """How many `InvoiceIssued` events and outbox rows the store holds for `invoice_id`."""
    events = billing_repository.store.load(invoice_id)
    rows = [row for row in billing_repository.store.outbox.pending() if row.key == invoice_id]
    return len(events), len(rows)


def issue(uow: SqlBillingUnitOfWork, bill: Bill) -> str:
    """Store the bill, its invoice (with `InvoiceIssued` and its outbox row) and a feed
    position in `uow`; the invoice's id."""
    uow.get_bills([bill.cart_id])
    invoice = bill.invoice(NOW)
    assert uow.issue_invoice(invoice)
    uow.save_bills([bill])
    uow.save_feed_position(41)
    return invoice.invoice_id


def test_work_in_a_unit_of_work_that_raises_is_rolled_back_entirely(
    billing_repository: SqlBillingRepository,
) -> None:
    bill = checked_out_bill(billing_repository, "c")
    issued: list[str] = []

    def interrupted_after_issuing() -> None:
        with billing_repository.transaction() as uow:
            issued.append(issue(uow, bill))
            raise Interrupted

    with pytest.raises(Interrupted):
        interrupted_after_issuing()
    [invoice_id] = issued
    assert billing_repository.bill("c") == Bill("c", 1, False, bill.lines)  # as the ledger left it
    assert billing_repository.invoice("c") is None
    assert invoice_announcements(billing_repository, invoice_id) == (0, 0)
    assert billing_repository.feed_position() == 0


def test_committed_work_is_visible_at_once_and_what_follows_rolls_back_alone(
    billing_repository: SqlBillingRepository,
) -> None:
    bill, other = (
        checked_out_bill(billing_repository, "c"),
        checked_out_bill(billing_repository, "d"),
    )
    issued: list[str] = []

    def commit_one_then_interrupted_after_another() -> None:
        with billing_repository.transaction() as uow:
            issued.append(issue(uow, bill))
            uow.commit()
            # Committed: billing's reads (other connections) see it while the block runs on.
            assert billing_repository.invoice("c") is not None
            assert billing_repository.bill("c") == bill
            assert invoice_announcements(billing_repository, issued[0]) == (1, 1)
            issued.append(issue(uow, other))
            raise Interrupted

    with pytest.raises(Interrupted):
        commit_one_then_interrupted_after_another()
    [_, other_invoice_id] = issued
    assert billing_repository.invoice("c") is not None
    assert billing_repository.feed_position() == 41
    assert billing_repository.invoice("d") is None
    assert billing_repository.bill("d") == Bill("d", 1, False, other.lines)
    assert invoice_announcements(billing_repository, other_invoice_id) == (0, 0)


def test_rollback_discards_the_work_though_the_block_ends_cleanly(
    billing_repository: SqlBillingRepository,
) -> None:
    bill = checked_out_bill(billing_repository, "c")
    with billing_repository.transaction() as uow:
        invoice_id = issue(uow, bill)
        uow.rollback()
    assert billing_repository.invoice("c") is None
    assert invoice_announcements(billing_repository, invoice_id) == (0, 0)
    with billing_repository.transaction() as uow:  # a clean end commits
        invoice_id = issue(uow, bill)
    assert billing_repository.invoice("c") is not None
    assert billing_repository.bill("c") == bill
    assert invoice_announcements(billing_repository, invoice_id) == (1, 1)
    assert billing_repository.feed_position() == 41
