"""The unit of work's statements on `bills`: through SQLAlchemy on any database, and through
SQLite's own driver on SQLite, where SQLAlchemy's cost per statement was a quarter of a small
batch's unit of work. Both write the same rows (`tests/integration/test_bill_statements.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, insert, select, update

from microservice_connector.billing_service.infrastructure.tables import bills
from microservice_connector.eventstore import sqlite_statements as sqlite_sql
from microservice_connector.eventstore.event_rows import sqlite_time

BillColumns = tuple[str, int, bool, str]  # cart_id, last_version, checked_out, lines


@dataclass(frozen=True, slots=True)
class BillRow:
    """A bill as its row holds it, with its lines encoded (`bill_rows.encode_lines`)."""

    cart_id: str
    last_version: int
    checked_out: bool
    lines: str


_SELECT_BILLS = select(
    bills.c.cart_id, bills.c.last_version, bills.c.checked_out, bills.c.lines
).where(bills.c.cart_id.in_(bindparam("cart_ids", expanding=True)))
_BILL_VALUES: dict[str, Any] = {
    "last_version": bindparam("b_last_version"),
    "checked_out": bindparam("b_checked_out"),
    "lines": bindparam("b_lines"),
    "updated_at": bindparam("b_updated_at"),
}
# Only if nobody changed the bill since it was read (instances race on carts).
_UPDATE_BILL = (
    update(bills)
    .where(bills.c.cart_id == bindparam("b_cart_id"), bills.c.last_version == bindparam("b_read"))
    .values(_BILL_VALUES)
)
_INSERT_BILL = insert(bills).values(cart_id=bindparam("b_cart_id"), **_BILL_VALUES)

_SQLITE_SELECT = (
    "SELECT cart_id, last_version, checked_out, lines FROM bills WHERE cart_id IN ({marks})"
)
_SQLITE_UPDATE = (
    "UPDATE bills SET last_version = ?, checked_out = ?, lines = ?, updated_at = ?"
    " WHERE cart_id = ? AND last_version = ?"
)
_SQLITE_INSERT = (
    "INSERT INTO bills (cart_id, last_version, checked_out, lines, updated_at)"
    " VALUES (?, ?, ?, ?, ?)"
)


class BillStatements:
    """Reads and writes `bills` rows on a connection, inside its transaction."""

    def select(self, connection: Connection, cart_ids: Sequence[str]) -> list[BillColumns]:
        """The rows of those carts that have a bill."""
        rows = connection.execute(_SELECT_BILLS, {"cart_ids": list(cart_ids)})
        return [(row[0], row[1], row[2], row[3]) for row in rows]

    def update(
        self, connection: Connection, rows: Sequence[tuple[BillRow, int]], now: datetime
    ) -> int:
        """Update each bill whose row is still at the version read (the `int`); how many were."""
        values = [{**_values(row, now), "b_read": read} for row, read in rows]
        return connection.execute(_UPDATE_BILL, values).rowcount

    def insert(self, connection: Connection, rows: Sequence[BillRow], now: datetime) -> None:
        """Insert new bills; `IntegrityError` if one was made meanwhile."""
        connection.execute(_INSERT_BILL, [_values(row, now) for row in rows])


class SqliteBillStatements(BillStatements):
    """The same statements, sent to SQLite's driver on the connection's transaction."""

    def select(self, connection: Connection, cart_ids: Sequence[str]) -> list[BillColumns]:
        """The rows of those carts that have a bill."""
        ids = list(cart_ids)
        sql = _SQLITE_SELECT.format(marks=",".join("?" * len(ids)))
        return [
            (cart_id, version, bool(checked_out), lines)
            for cart_id, version, checked_out, lines in sqlite_sql.cursor(connection)
            .execute(sql, ids)
            .fetchall()
        ]

    def update(
        self, connection: Connection, rows: Sequence[tuple[BillRow, int]], now: datetime
    ) -> int:
        """Update each bill whose row is still at the version read (the `int`); how many were."""
        stamp = sqlite_time(now)
        cursor = sqlite_sql.cursor(connection)
        cursor.executemany(
            _SQLITE_UPDATE,
            [
                (row.last_version, row.checked_out, row.lines, stamp, row.cart_id, read)
                for row, read in rows
            ],
        )
        return cursor.rowcount

    def insert(self, connection: Connection, rows: Sequence[BillRow], now: datetime) -> None:
        """Insert new bills; `sqlite3.IntegrityError` if one was made meanwhile."""
        stamp = sqlite_time(now)
        sqlite_sql.cursor(connection).executemany(
            _SQLITE_INSERT,
            [(row.cart_id, row.last_version, row.checked_out, row.lines, stamp) for row in rows],
        )


def bill_statements(engine: Engine) -> BillStatements:
    """The statements for `engine`'s database."""
    return SqliteBillStatements() if engine.dialect.name == "sqlite" else BillStatements()


def _values(row: BillRow, now: datetime) -> dict[str, Any]:
    return {
        "b_cart_id": row.cart_id,
        "b_last_version": row.last_version,
        "b_checked_out": row.checked_out,
        "b_lines": row.lines,
        "b_updated_at": now,
    }
