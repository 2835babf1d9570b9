"""What billing needs from storage, as protocols; `SqlBillingRepository` is the real one."""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import datetime
from types import TracebackType
from typing import Protocol

from microservice_connector.billing_service.domain import Bill, Invoice, Price


class ConcurrentBillUpdate(Exception):
    """Another instance changed the same bills (or issued the same invoice) first; the
    transaction was rolled back, nothing of it written, and may be tried again."""


class BillingUnitOfWork(Protocol):
    """Reads and writes that commit together, or not at all: used as a context manager, it
    commits on `commit()` or when the block ends cleanly and rolls back otherwise."""

    def __enter__(self) -> BillingUnitOfWork:
        """Begin; the unit of work itself."""
        ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        """Commit what is left if the block ended cleanly, else roll it back."""
        ...

    def commit(self) -> None:
        """Make everything done so far durable, all at once."""
        ...

    def rollback(self) -> None:
        """Discard everything done since the last commit."""
        ...

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
    """Billing's storage: one unit of work per batch of events."""

    def transaction(self) -> AbstractContextManager[BillingUnitOfWork]:
        """A new unit of work; raises `ConcurrentBillUpdate` when it lost a race with another
        instance."""
        ...
