"""Billing's read model as its HTTP API and healing read it: on reader connections, so a
read never queues behind a unit of work (SQLite's WAL readers, PostgreSQL's pool)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import SQLAlchemyError

from microservice_connector.billing_service.domain import Bill, Invoice, Price
from microservice_connector.billing_service.infrastructure.bill_rows import bill_of, lines_of, utc
from microservice_connector.billing_service.infrastructure.failure_meaning import billing_failure
from microservice_connector.billing_service.infrastructure.feed_position import read_position
from microservice_connector.billing_service.infrastructure.sql_prices import current_prices
from microservice_connector.billing_service.infrastructure.tables import bills, invoices


@dataclass(frozen=True, slots=True)
class BillStamp:
    """How far billing got with a cart: the last version applied, and when that was
    (both written by the transaction that applied it)."""

    cart_id: str
    last_version: int
    updated_at: datetime


class SqlBillReads:
    """What billing has committed, read beside its writer: each read sees the last commit,
    never a unit of work still open, and does not wait for one."""

    def __init__(self, reader: Engine) -> None:
        self._reader = reader

    def bill(self, cart_id: str) -> Bill | None:
        """The cart's running bill, or None before its first event."""
        with self._reading() as connection:
            row = connection.execute(select(bills).where(bills.c.cart_id == cart_id)).first()
        return (
            None if row is None else bill_of(cart_id, row.last_version, row.checked_out, row.lines)
        )

    def invoice(self, cart_id: str) -> Invoice | None:
        """The cart's invoice, or None before checkout."""
        with self._reading() as connection:
            row = connection.execute(select(invoices).where(invoices.c.cart_id == cart_id)).first()
        if row is None:
            return None
        return Invoice(
            row.invoice_id, row.cart_id, lines_of(row.lines), row.total_cents, utc(row.issued_at)
        )

    def prices(self) -> dict[str, Price]:
        """The latest version of every item's price, by item id."""
        with self._reading() as connection:
            return current_prices(connection)

    def stamp(self, cart_id: str) -> BillStamp | None:
        """The cart's last applied version and when, or None before its first event."""
        query = select(bills.c.last_version, bills.c.updated_at).where(bills.c.cart_id == cart_id)
        with self._reading() as connection:
            row = connection.execute(query).first()
        if row is None:
            return None
        updated: datetime = row.updated_at
        updated = updated.replace(tzinfo=UTC) if updated.tzinfo is None else updated
        return BillStamp(cart_id, row.last_version, updated)

    def last_versions(self, cart_ids: Collection[str]) -> dict[str, int]:
        """The last applied version of each of the carts that has a bill."""
        query = select(bills.c.cart_id, bills.c.last_version).where(bills.c.cart_id.in_(cart_ids))
        with self._reading() as connection:
            return {cart_id: version for cart_id, version in connection.execute(query)}

    def summary(self) -> dict[str, int]:
        """Every bill's total by cart id, for comparing rebuilds."""
        with self._reading() as connection:
            rows = connection.execute(select(bills.c.cart_id, bills.c.lines)).all()
        return {cart: bill_of(cart, 0, False, lines).total_cents for cart, lines in rows}

    def feed_position(self) -> int:
        """The cart feed's last position billing handled, as committed (0 before the first)."""
        with self._reading() as connection:
            return read_position(connection)

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A reader connection; a database failure raises what it means (`failure_meaning`)."""
        try:
            with self._reader.connect() as connection:
                yield connection
        except (SQLAlchemyError, OverflowError) as exc:
            raise billing_failure(self._reader, exc) from exc
