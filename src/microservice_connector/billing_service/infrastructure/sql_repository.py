"""Billing's storage on SQLAlchemy: bills, invoices, prices (as events, `sql_prices`), and
InvoiceIssued via the outbox."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlalchemy import Connection, Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector import tracing
from microservice_connector.billing_service.application.ports import ConcurrentBillUpdate
from microservice_connector.billing_service.domain import Bill, BillLine, Invoice, Price
from microservice_connector.billing_service.infrastructure.feed_position import save_position
from microservice_connector.billing_service.infrastructure.sql_prices import (
    PriceHistory,
    change_price,
    current_prices,
    project_prices,
    seed_prices,
)
from microservice_connector.billing_service.infrastructure.tables import (
    DEFAULT_PRICES,
    bills,
    invoices,
    metadata,
)
from microservice_connector.events.billing import InvoiceIssued, InvoiceLine
from microservice_connector.events.envelope import NewEvent
from microservice_connector.eventstore import AppendRequest, ConcurrencyError, SqlEventStore
from microservice_connector.eventstore.engine import create_schema, describe, describe_failure
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.failures import (
    DataRejected,
    Failure,
    classify,
    is_unique_violation,
)

BILLING_TOPIC = "billing.events"
PRICE_RETRIES = 10


class _Line(msgspec.Struct):
    quantity: int
    unit_price_cents: int
    unpriced: bool = False
    price_version: int | None = None  # absent in lines written before prices were events


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
        self._prices = PriceHistory(connection)
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

    def price_of(self, item_id: str, at: datetime) -> Price | None:
        """The item's price in effect at `at`, or None."""
        return self._prices.price_at(item_id, at)

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
        trace = tracing.current_trace()  # the invoice span's: the cart command's trace goes on
        event = NewEvent(
            "InvoiceIssued",
            payload,
            invoice.issued_at,
            traceparent=trace.get("traceparent"),
            tracestate=trace.get("tracestate"),
        )
        # Already there when a rebuild dropped the read model: it was published then.
        with contextlib.suppress(ConcurrencyError):
            self._store.append_in(
                self.connection, AppendRequest(invoice.invoice_id, "Invoice", 0, [event])
            )
        return True


class SqlBillingRepository:
    """Billing's read model and outbox in one database (SQLite `billing.db` or PostgreSQL)."""

    def __init__(self, store: SqlEventStore, *, seed: Mapping[str, int] = DEFAULT_PRICES) -> None:
        """Create the tables and, in a new database, the first prices as events."""
        self._store = store
        self._engine = store.writer
        create_schema(self._engine, metadata)  # instances starting together take turns
        try:
            with self.transaction() as tx:
                seed_prices(tx.connection, store, seed)
        except (ConcurrencyError, ConcurrentBillUpdate):
            pass  # another instance seeded the prices first
        except DataRejected as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    @property
    def store(self) -> SqlEventStore:
        """The event store holding billing's own events and outbox."""
        return self._store

    @contextmanager
    def transaction(self) -> Iterator[SqlTransaction]:
        """A transaction on the writer; commits when the block ends cleanly, else rolls back
        and raises what the failure means (`eventstore.failures`): `ConcurrentBillUpdate` for
        a race lost to another instance (a bill or invoice written meanwhile, a deadlock),
        `DatabaseUnavailable` for what may heal by itself, `DataRejected` for data the
        database refuses (a value that does not fit): retrying that cannot help."""
        try:
            with self._engine.begin() as connection:
                yield SqlTransaction(connection, self._store)
        except (SQLAlchemyError, OverflowError) as exc:
            raise _meaning(self._engine, exc) from exc

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
        issued_at: datetime = row.issued_at
        issued_at = (
            issued_at.replace(tzinfo=UTC) if issued_at.tzinfo is None else issued_at.astimezone(UTC)
        )
        return Invoice(row.invoice_id, row.cart_id, _lines(row.lines), row.total_cents, issued_at)

    def prices(self) -> dict[str, Price]:
        """The latest version of every item's price, by item id."""
        with self.transaction() as tx:
            return current_prices(tx.connection)

    def set_price(self, item_id: str, unit_price_cents: int) -> Price:
        """Record the item's next price as a `PriceChanged` event, in effect from now: a
        bill line takes it when its quantity next changes at or after this moment."""
        for _ in range(PRICE_RETRIES):
            try:
                with self.transaction() as tx:
                    change = change_price(
                        tx.connection, self._store, item_id, unit_price_cents, datetime.now(UTC)
                    )
                return Price(change.unit_price_cents, change.version)
            except (ConcurrencyError, ConcurrentBillUpdate):
                continue  # another instance took that version first: try the next one
        raise ConcurrentBillUpdate(
            f"the price of {item_id} kept changing meanwhile ({PRICE_RETRIES} tries); try again"
        )

    def reset_read_model(self) -> None:
        """Delete every bill and invoice, and project the prices again from billing's own
        `PriceChanged` events (which stay, as do the others)."""
        with self.transaction() as tx:
            tx.connection.execute(delete(bills))
            tx.connection.execute(delete(invoices))
            project_prices(tx.connection, self._store)

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


def _meaning(engine: Engine, exc: SQLAlchemyError | OverflowError) -> Exception:
    """The billing error that says what a database failure means for whoever retries."""
    failure = classify(exc)
    if failure is Failure.RACE or is_unique_violation(exc):
        return ConcurrentBillUpdate(describe_failure(engine, exc))
    if failure is Failure.TRANSIENT:
        return DatabaseUnavailable(describe_failure(engine, exc))
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return DataRejected(f"database {describe(engine)} refused billing's write: {reason}")


def _bill(cart_id: str, last_version: int, checked_out: bool, lines: str) -> Bill:
    return Bill(cart_id, last_version, bool(checked_out), _lines(lines))


def _lines(encoded: str) -> dict[str, BillLine]:
    return {
        item: BillLine(line.quantity, line.unit_price_cents, line.unpriced, line.price_version)
        for item, line in _decode_lines(encoded).items()
    }


def _encode_lines(lines: dict[str, BillLine]) -> str:
    return _encode(
        {
            item: _Line(line.quantity, line.unit_price_cents, line.unpriced, line.price_version)
            for item, line in lines.items()
        }
    ).decode()
