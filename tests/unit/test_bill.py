"""Billing's version gate and pricing, without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from microservice_connector.billing_service.domain import Bill, BillLine, Price, VersionCheck
from microservice_connector.events.cart import CartCheckedOut, ItemAdded, ItemRemoved

NOW = datetime(2026, 11, 25, tzinfo=UTC)
PRICES = {"a": 250, "b": 1000}


def price_list(item_id: str, at: datetime) -> Price | None:
    """Every price at version 1, whenever."""
    cents = PRICES.get(item_id)
    return None if cents is None else Price(cents, 1)


def test_the_gate_tells_next_duplicate_and_gap() -> None:
    bill = Bill("c", last_version=3)
    assert bill.check(4) is VersionCheck.NEXT
    assert bill.check(3) is VersionCheck.DUPLICATE
    assert bill.check(1) is VersionCheck.DUPLICATE
    assert bill.check(5) is VersionCheck.GAP


def test_applying_prices_lines_and_totals() -> None:
    bill = Bill("c")
    bill.apply(ItemAdded("c", "a", 2, NOW), 1, price_list)
    bill.apply(ItemAdded("c", "b", 1, NOW), 2, price_list)
    bill.apply(ItemRemoved("c", "a", 1, NOW), 3, price_list)
    assert bill.lines == {
        "a": BillLine(1, 250, price_version=1),
        "b": BillLine(1, 1000, price_version=1),
    }
    assert bill.total_cents == 1250
    assert bill.last_version == 3


def test_an_item_without_a_price_is_billed_at_zero_and_marked() -> None:
    bill = Bill("c")
    bill.apply(ItemAdded("c", "mystery", 3, NOW), 1, price_list)
    assert bill.lines["mystery"] == BillLine(3, 0, unpriced=True)
    assert bill.total_cents == 0


def test_removing_all_drops_the_line_and_checkout_freezes_an_invoice() -> None:
    bill = Bill("c")
    bill.apply(ItemAdded("c", "a", 2, NOW), 1, price_list)
    bill.apply(ItemAdded("c", "b", 2, NOW), 2, price_list)
    bill.apply(ItemRemoved("c", "b", 2, NOW), 3, price_list)
    bill.apply(CartCheckedOut("c", NOW), 4, price_list)
    assert bill.checked_out
    invoice = bill.invoice(NOW)
    assert (invoice.invoice_id, invoice.lines, invoice.total_cents) == (
        "inv-c",
        {"a": BillLine(2, 250, price_version=1)},
        500,
    )


def test_applying_out_of_turn_is_refused() -> None:
    with pytest.raises(ValueError, match="not next"):
        Bill("c").apply(ItemAdded("c", "a", 1, NOW), 2, price_list)


def test_each_event_is_priced_at_the_price_in_effect_at_its_own_time() -> None:
    changed = datetime(2026, 11, 26, tzinfo=UTC)

    def history(item_id: str, at: datetime) -> Price | None:
        return Price(250, 1) if at < changed else Price(300, 2)

    bill = Bill("c")
    bill.apply(ItemAdded("c", "a", 1, NOW), 1, history)
    assert bill.lines["a"] == BillLine(1, 250, price_version=1)
    bill.apply(ItemAdded("c", "a", 1, changed), 2, history)
    assert bill.lines["a"] == BillLine(2, 300, price_version=2)
