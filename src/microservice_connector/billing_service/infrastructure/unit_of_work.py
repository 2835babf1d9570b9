"""Billing's unit of work: one transaction on a connection billing owns, through which bills,
invoices, prices, the feed position and billing's own events (with their outbox rows) are
written together or not at all."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection
from datetime import UTC, datetime
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine, insert, select
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector import tracing
from microservice_connector.billing_service.application.ports import ConcurrentBillUpdate
from microservice_connector.billing_service.domain import Bill, Invoice, Price
from microservice_connector.billing_service.infrastructure.bill_rows import bill_of, encode_lines
from microservice_connector.billing_service.infrastructure.bill_statements import (
    BillRow,
    bill_statements,
)
from microservice_connector.billing_service.infrastructure.failure_meaning import billing_failure
from microservice_connector.billing_service.infrastructure.feed_position import save_position
from microservice_connector.billing_service.infrastructure.sql_prices import (
    PriceHistory,
    PriceVersions,
    change_price,
)
from microservice_connector.billing_service.infrastructure.tables import invoices
from microservice_connector.events.billing import InvoiceIssued, InvoiceLine
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, ConcurrencyError, SqlEventStore

# SQLite's driver raises its own errors for the statements sent to it (`bill_statements`).
_DATABASE_ERRORS = (SQLAlchemyError, sqlite3.Error, OverflowError)


class SqlBillingUnitOfWork:
    """`with uow: ...; uow.commit()`: everything done inside commits at once (explicitly, or
    when the block ends cleanly) or not at all (the block raised, or `rollback`). It owns its
    connection from billing's writer; the event store only appends on it (`append_in`), so
    an invoice and its `InvoiceIssued` outbox row are never one without the other. Database
    failures raise what they mean (`failure_meaning`)."""

    def __init__(
        self, writer: Engine, store: SqlEventStore, prices: PriceVersions | None = None
    ) -> None:
        self._writer = writer
        self._statements = bill_statements(writer)
        self._store = store
        self._shared_prices = prices
        self._connection: Connection | None = None
        self._prices: PriceHistory | None = None
        self._read: dict[str, int] = {}  # last_version of the bills with a row, as read

    def __enter__(self) -> Self:
        """Open the connection and begin (on SQLite this takes the file's write lock)."""
        try:
            connection = self._writer.connect()
            try:
                if connection.dialect.name == "postgresql":
                    # Whatever the server's default: a statement after a lock wait (the
                    # pricing lock) must see what committed meanwhile.
                    connection.execution_options(isolation_level="READ COMMITTED")
                connection.begin()
            except BaseException:
                connection.close()
                raise
        except _DATABASE_ERRORS as exc:
            raise billing_failure(self._writer, exc) from exc
        self._connection = connection
        self._prices, self._read = self._price_history(), {}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Commit what is left if the block ended cleanly, else roll it back; then close."""
        try:
            if exc is None:
                self.commit()
            else:
                self.rollback()
        finally:
            if self._connection is not None:
                self._connection.close()
            self._connection = self._prices = None
        if isinstance(exc, _DATABASE_ERRORS):
            raise billing_failure(self._writer, exc) from exc

    @property
    def connection(self) -> Connection:
        """The connection this unit of work owns, in its transaction (a new one after a
        commit): what is written on it commits or rolls back with the unit of work."""
        if self._connection is None:
            raise RuntimeError("a unit of work is used inside its `with` block only")
        if not self._connection.in_transaction():
            self._connection.begin()  # raw driver cursors must not run outside one
        return self._connection

    def commit(self) -> None:
        """Make everything done so far durable and visible to readers, all at once."""
        if self._connection is None or not self._connection.in_transaction():
            return
        try:
            self._connection.commit()
        except _DATABASE_ERRORS as exc:
            raise billing_failure(self._writer, exc) from exc
        self._prices = self._price_history()  # prices may change before the next

    def rollback(self) -> None:
        """Discard everything done since the last commit, and what was read meanwhile."""
        if self._connection is None or not self._connection.in_transaction():
            return
        self._read, self._prices = {}, self._price_history()
        try:
            self._connection.rollback()
        except _DATABASE_ERRORS as exc:
            raise billing_failure(self._writer, exc) from exc

    def get_bill(self, cart_id: str) -> Bill | None:
        """The committed bill of `cart_id`, or None."""
        return self.get_bills([cart_id]).get(cart_id)

    def get_bills(self, cart_ids: Collection[str]) -> dict[str, Bill]:
        """The committed bills of those carts that have one, in one query."""
        found = {
            cart_id: bill_of(cart_id, last_version, checked_out, lines)
            for cart_id, last_version, checked_out, lines in self._statements.select(
                self.connection, list(cart_ids)
            )
        }
        self._read.update({cart_id: bill.last_version for cart_id, bill in found.items()})
        return found

    def save_bills(self, changed: Collection[Bill]) -> None:
        """Insert the new bills and update the others, one statement each for all of them;
        `ConcurrentBillUpdate` if another transaction changed or created one since it was read.
        """
        connection, now = self.connection, datetime.now(UTC)
        rows = [
            BillRow(bill.cart_id, bill.last_version, bill.checked_out, encode_lines(bill.lines))
            for bill in changed
        ]
        old = [(row, self._read[row.cart_id]) for row in rows if row.cart_id in self._read]
        new = [row for row in rows if row.cart_id not in self._read]
        if old and self._statements.update(connection, old, now) != len(old):
            raise ConcurrentBillUpdate(f"{len(old)} bills changed by another instance meanwhile")
        if new:
            self._statements.insert(connection, new, now)  # a bill made meanwhile: a race
        self._read.update({bill.cart_id: bill.last_version for bill in changed})

    def save_feed_position(self, position: int) -> None:
        """Billing has handled the cart feed up to `position`: commits with this unit of work."""
        save_position(self.connection, position)

    def price_of(self, item_id: str, at: datetime) -> Price | None:
        """The item's price in effect at `at`, or None."""
        connection = self.connection
        if self._prices is None:
            self._prices = PriceHistory(connection, self._shared_prices)
        return self._prices.price_at(item_id, at)

    def change_price(
        self, item_id: str, unit_price_cents: int, effective_at: datetime | None = None
    ) -> Price:
        """Append the item's next `PriceChanged`, in effect from `effective_at` (default: now,
        once no transaction prices cart events), and project it; `ConcurrencyError` if another
        transaction changed that price meanwhile."""
        change = change_price(self.connection, self._store, item_id, unit_price_cents, effective_at)
        self._prices = PriceHistory(self.connection)  # its own until the change commits
        return Price(change.unit_price_cents, change.version)

    def _price_history(self) -> PriceHistory:
        assert self._connection is not None
        return PriceHistory(self._connection, self._shared_prices)

    def issue_invoice(self, invoice: Invoice) -> bool:
        """Store the invoice and append `InvoiceIssued` with its outbox row in this unit of
        work; False if already issued."""
        connection = self.connection
        exists = connection.execute(
            select(invoices.c.invoice_id).where(invoices.c.cart_id == invoice.cart_id)
        ).first()
        if exists is not None:
            return False
        connection.execute(
            insert(invoices).values(
                invoice_id=invoice.invoice_id,
                cart_id=invoice.cart_id,
                lines=encode_lines(invoice.lines),
                total_cents=invoice.total_cents,
                issued_at=invoice.issued_at,
            )
        )
        # Already there when a rebuild dropped the read model: it was published then.
        with contextlib.suppress(ConcurrencyError):
            self._store.append_in(
                connection, AppendRequest(invoice.invoice_id, "Invoice", 0, [_issued(invoice)])
            )
        return True


def _issued(invoice: Invoice) -> NewEvent:
    """The `InvoiceIssued` event of `invoice`, in the current (the invoice span's) trace."""
    payload = InvoiceIssued(
        invoice_id=invoice.invoice_id,
        cart_id=invoice.cart_id,
        lines={
            item: InvoiceLine(ln.quantity, ln.unit_price_cents, ln.amount_cents, ln.unpriced)
            for item, ln in invoice.lines.items()
        },
        total_cents=invoice.total_cents,
        timestamp=invoice.issued_at,
    )
    trace = tracing.current_trace()  # the cart command's trace goes on
    return NewEvent(
        "InvoiceIssued",
        payload,
        invoice.issued_at,
        traceparent=trace.get("traceparent"),
        tracestate=trace.get("tracestate"),
    )
