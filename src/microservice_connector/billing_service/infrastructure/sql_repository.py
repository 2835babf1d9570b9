"""Billing's storage on SQLAlchemy: bills, prices, invoices, and InvoiceIssued via the outbox."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Connection, bindparam, delete, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError

from microservice_connector.billing_service.application.ports import ConcurrentBillUpdate
from microservice_connector.billing_service.domain import Bill, BillLine, Invoice
from microservice_connector.billing_service.infrastructure.feed_position import save_position
from microservice_connector.billing_service.infrastructure.tables import (
    DEFAULT_PRICES,
    bills,
    invoices,
    metadata,
    prices,
)
from microservice_connector.events.billing import InvoiceIssued, InvoiceLine
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, ConcurrencyError, SqlEventStore
from microservice_connector.eventstore.engine import create_schema, describe_failure
from microservice_connector.eventstore.errors import DatabaseUnavailable

BILLING_TOPIC = "billing.events"


class _Line(msgspec.Struct):
    quantity: int
    unit_price_cents: int
    unpriced: bool = False


_encode = msgspec.json.Encoder().encode

# Built once: compiling statements per event was most of billing's time.
_SELECT_BILLS = select(bills).where(bills.c.cart_id.in_(bindparam("cart_ids", expanding=True)))
_BILL_VALUES: dict[str, Any] = {
    "last_version": bindparam("b_last_version"),
    "checked_out": bindparam("b_checked_out"),
    "lines": bindparam("b_lines"),
    "updated_at": bindparam("b_updated_at"),
}
# Only if nobody changed the bill since this transaction read it (instances race on carts).
_UPDATE_BILL = (
    update(bills)
    .where(bills.c.cart_id == bindparam("b_cart_id"), bills.c.last_version == bindparam("b_read"))
    .values(_BILL_VALUES)
)
_INSERT_BILL = insert(bills).values(cart_id=bindparam("b_cart_id"), **_BILL_VALUES)
_decode_lines = msgspec.json.Decoder(dict[str, _Line]).decode
# deadlock_detected, serialization_failure: the transaction lost a race and wrote nothing.
_TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


@dataclass(frozen=True, slots=True)
class BillStamp:
    """How far billing got with a cart: the last version applied, and when that was
    (both written by the transaction that applied it)."""

    cart_id: str
    last_version: int
    updated_at: datetime


class SqlTransaction:
    """One billing transaction on the store's writer connection."""

    def __init__(self, connection: Connection, store: SqlEventStore) -> None:
        self.connection = connection
        self._store = store
        self._prices: dict[str, int | None] = {}
        self._read: dict[str, int] = {}  # last_version of the bills with a row, as read

    def get_bill(self, cart_id: str) -> Bill | None:
        """The committed bill of `cart_id`, or None."""
        return self.get_bills([cart_id]).get(cart_id)

    def get_bills(self, cart_ids: Collection[str]) -> dict[str, Bill]:
        """The committed bills of those carts that have one, in one query."""
        found = {
            row.cart_id: _bill(row.cart_id, row.last_version, row.checked_out, row.lines)
            for row in self.connection.execute(_SELECT_BILLS, {"cart_ids": list(cart_ids)})
        }
        self._read.update({cart_id: bill.last_version for cart_id, bill in found.items()})
        return found

    def save_bills(self, changed: Collection[Bill]) -> None:
        """Insert the new bills and update the others, one statement each for all of them;
        `ConcurrentBillUpdate` if another transaction changed or created one since it was read.
        """
        now = datetime.now(UTC)
        rows = [
            {
                "b_cart_id": bill.cart_id,
                "b_last_version": bill.last_version,
                "b_checked_out": bill.checked_out,
                "b_lines": _encode_lines(bill.lines),
                "b_updated_at": now,
            }
            for bill in changed
        ]
        old = [
            {**row, "b_read": self._read[row["b_cart_id"]]}
            for row in rows
            if row["b_cart_id"] in self._read
        ]
        new = [row for row in rows if row["b_cart_id"] not in self._read]
        if old and self.connection.execute(_UPDATE_BILL, old).rowcount != len(old):
            raise ConcurrentBillUpdate(f"{len(old)} bills changed by another instance meanwhile")
        if new:
            self.connection.execute(_INSERT_BILL, new)  # a bill made meanwhile: IntegrityError
        self._read.update({bill.cart_id: bill.last_version for bill in changed})

    def save_feed_position(self, position: int) -> None:
        """Billing has handled the cart feed up to `position`: commits with this transaction."""
        save_position(self.connection, position)

    def price_of(self, item_id: str) -> int | None:
        """The item's unit price in cents, or None."""
        if item_id not in self._prices:
            self._prices[item_id] = self.connection.execute(
                select(prices.c.unit_price_cents).where(prices.c.item_id == item_id)
            ).scalar_one_or_none()
        return self._prices[item_id]

    def issue_invoice(self, invoice: Invoice) -> bool:
        """Store the invoice and append `InvoiceIssued` to the outbox; False if already issued."""
        exists = self.connection.execute(
            select(invoices.c.invoice_id).where(invoices.c.cart_id == invoice.cart_id)
        ).first()
        if exists is not None:
            return False
        self.connection.execute(
            insert(invoices).values(
                invoice_id=invoice.invoice_id,
                cart_id=invoice.cart_id,
                lines=_encode_lines(invoice.lines),
                total_cents=invoice.total_cents,
                issued_at=invoice.issued_at,
            )
        )
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
        event = NewEvent("InvoiceIssued", payload, invoice.issued_at)
        # Already there when a rebuild dropped the read model: it was published then.
        with contextlib.suppress(ConcurrencyError):
            self._store.append_in(
                self.connection, AppendRequest(invoice.invoice_id, "Invoice", 0, [event])
            )
        return True


class SqlBillingRepository:
    """Billing's read model and outbox in one database (SQLite `billing.db` or PostgreSQL)."""

    def __init__(self, store: SqlEventStore, *, seed_prices: dict[str, int] | None = None) -> None:
        self._store = store
        self._engine = store.writer
        create_schema(self._engine, metadata)  # instances starting together take turns
        try:
            with self._engine.begin() as connection:
                if connection.execute(select(prices.c.item_id).limit(1)).first() is None:
                    seed = DEFAULT_PRICES if seed_prices is None else seed_prices
                    now = datetime.now(UTC)
                    if seed:
                        connection.execute(
                            insert(prices),
                            [
                                {"item_id": k, "unit_price_cents": v, "updated_at": now}
                                for k, v in seed.items()
                            ],
                        )
        except IntegrityError:
            pass  # another instance seeded the prices first
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(describe_failure(self._engine, exc)) from exc

    @property
    def store(self) -> SqlEventStore:
        """The event store holding billing's own events and outbox."""
        return self._store

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """A transaction on the writer; commits when the block ends cleanly. A race lost to
        another instance (a bill or invoice written meanwhile, a deadlock) rolls it back and
        raises `ConcurrentBillUpdate`; any other database failure `DatabaseUnavailable`."""
        try:
            with self._engine.begin() as connection:
                yield SqlTransaction(connection, self._store)
        except IntegrityError as exc:
            raise ConcurrentBillUpdate(describe_failure(self._engine, exc)) from exc
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) in _TRANSIENT_SQLSTATES:
                raise ConcurrentBillUpdate(describe_failure(self._engine, exc)) from exc
            raise DatabaseUnavailable(describe_failure(self._engine, exc)) from exc
        except SQLAlchemyError as exc:
            raise DatabaseUnavailable(describe_failure(self._engine, exc)) from exc

    def bill(self, cart_id: str) -> Bill | None:
        """The cart's running bill, or None before its first event."""
        with self.transaction() as tx:
            return tx.get_bill(cart_id)

    def invoice(self, cart_id: str) -> Invoice | None:
        """The cart's invoice, or None before checkout."""
        with self.transaction() as tx:
            row = tx.connection.execute(
                select(invoices).where(invoices.c.cart_id == cart_id)
            ).first()
        if row is None:
            return None
        lines = {
            k: BillLine(v.quantity, v.unit_price_cents, v.unpriced)
            for k, v in _decode_lines(row.lines).items()
        }
        issued_at: datetime = row.issued_at
        issued_at = (
            issued_at.replace(tzinfo=UTC) if issued_at.tzinfo is None else issued_at.astimezone(UTC)
        )
        return Invoice(row.invoice_id, row.cart_id, lines, row.total_cents, issued_at)

    def prices(self) -> dict[str, int]:
        """The whole price list, by item id."""
        with self.transaction() as tx:
            rows = tx.connection.execute(
                select(prices.c.item_id, prices.c.unit_price_cents).order_by(prices.c.item_id)
            )
            return {item: cents for item, cents in rows}

    def set_price(self, item_id: str, unit_price_cents: int) -> None:
        """Set one item's price; bills reprice a line when its quantity next changes."""
        try:
            self._set_price(item_id, unit_price_cents)
        except ConcurrentBillUpdate:  # another instance inserted it first: now it updates
            self._set_price(item_id, unit_price_cents)

    def _set_price(self, item_id: str, unit_price_cents: int) -> None:
        with self.transaction() as tx:
            values = {"unit_price_cents": unit_price_cents, "updated_at": datetime.now(UTC)}
            done = tx.connection.execute(
                update(prices).where(prices.c.item_id == item_id).values(**values)
            )
            if done.rowcount == 0:
                tx.connection.execute(insert(prices).values(item_id=item_id, **values))

    def reset_read_model(self) -> None:
        """Delete every bill and invoice (prices and billing's own events stay)."""
        with self.transaction() as tx:
            tx.connection.execute(delete(bills))
            tx.connection.execute(delete(invoices))

    def stamp(self, cart_id: str) -> BillStamp | None:
        """The cart's last applied version and when, or None before its first event."""
        query = select(bills.c.last_version, bills.c.updated_at).where(bills.c.cart_id == cart_id)
        with self.transaction() as tx:
            row = tx.connection.execute(query).first()
        if row is None:
            return None
        updated: datetime = row.updated_at
        updated = updated.replace(tzinfo=UTC) if updated.tzinfo is None else updated
        return BillStamp(cart_id, row.last_version, updated)

    def summary(self) -> dict[str, int]:
        """Every bill's total by cart id, for comparing rebuilds."""
        with self.transaction() as tx:
            rows = tx.connection.execute(select(bills.c.cart_id, bills.c.lines))
            return {cart: _bill(cart, 0, False, lines).total_cents for cart, lines in rows}


def _bill(cart_id: str, last_version: int, checked_out: bool, lines: str) -> Bill:
    decoded = _decode_lines(lines)
    return Bill(
        cart_id,
        last_version,
        bool(checked_out),
        {k: BillLine(v.quantity, v.unit_price_cents, v.unpriced) for k, v in decoded.items()},
    )


def _encode_lines(lines: dict[str, BillLine]) -> str:
    return _encode(
        {k: _Line(v.quantity, v.unit_price_cents, v.unpriced) for k, v in lines.items()}
    ).decode()
