"""What billing needs from storage, as protocols; `SqlBillingRepository` is the real one."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

from microservice_connector.billing_service.domain import Bill, Invoice


class BillingTransaction(Protocol):
    """Reads and writes that commit together, or not at all."""

    def get_bill(self, cart_id: str) -> Bill | None:
        """The cart's bill as last committed, or None before its first event."""
        ...

    def save_bill(self, bill: Bill) -> None:
        """Store the bill (insert or replace)."""
        ...

    def price_of(self, item_id: str) -> int | None:
        """The item's unit price in cents, or None when it has no price."""
        ...

    def issue_invoice(self, invoice: Invoice) -> bool:
        """Store the invoice and its `InvoiceIssued` outbox row; False if already issued."""
        ...


class BillingRepository(Protocol):
    """Billing's storage: one transaction per batch of events."""

    def transaction(self) -> AbstractContextManager[BillingTransaction]:
        """A transaction that commits when the block ends without an exception."""
        ...
