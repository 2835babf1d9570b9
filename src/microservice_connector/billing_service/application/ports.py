"""What billing needs from storage, as protocols; `SqlBillingRepository` is the real one."""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Protocol

from microservice_connector.billing_service.domain import Bill, Invoice, Price


class ConcurrentBillUpdate(Exception):
    """Another instance changed the same bills (or issued the same invoice) first; the
    transaction was rolled back, nothing of it written, and may be tried again."""


class BillingTransaction(Protocol):
    """Reads and writes that commit together, or not at all."""

    def get_bills(self, cart_ids: Collection[str]) -> dict[str, Bill]:
        """The committed bills of those carts that have one, by cart id."""
        ...

    def save_bills(self, bills: Collection[Bill]) -> None:
        """Store the bills (insert or replace); `ConcurrentBillUpdate` if one changed since
        this transaction read it."""
        ...

    def save_feed_position(self, position: int) -> None:
        """Record that the cart store's global feed is handled up to `position`."""
        ...

    def price_of(self, item_id: str, at: datetime) -> Price | None:
        """The item's price in effect at `at`, or None when it had none then."""
        ...

    def issue_invoice(self, invoice: Invoice) -> bool:
        """Store the invoice and its `InvoiceIssued` outbox row; False if already issued."""
        ...


class BillingRepository(Protocol):
    """Billing's storage: one transaction per batch of events."""

    def transaction(self) -> AbstractContextManager[BillingTransaction]:
        """A transaction that commits when the block ends without an exception; raises
        `ConcurrentBillUpdate` when it lost a race with another instance."""
        ...
