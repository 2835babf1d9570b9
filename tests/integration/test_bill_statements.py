"""The unit of work's `bills` statements: on SQLite through the driver, they write rows that
SQLAlchemy reads back exactly as it reads the rows it writes itself; on both databases an
update of a bill changed since it was read touches nothing, and a bill inserted meanwhile is
a race lost (`ConcurrentBillUpdate`), not refused data."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from microservice_connector.billing_service.application.ports import ConcurrentBillUpdate
from microservice_connector.billing_service.domain import Bill
from microservice_connector.billing_service.infrastructure.bill_statements import (
    BillRow,
    BillStatements,
    SqliteBillStatements,
    bill_statements,
)
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.infrastructure.tables import bills
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.settings import Settings

NOW = datetime(2026, 12, 5, 12, 30, 15, 123456, tzinfo=UTC)
LINES = '{"item-001":{"quantity":2,"unit_price_cents":999,"unpriced":false,"price_version":1}}'


def stored_rows(billing_repository: SqlBillingRepository) -> list[tuple[object, ...]]:
    """Every bills row as SQLAlchemy reads it, by cart."""
    with billing_repository.store.reader.connect() as connection:
        found = connection.execute(select(bills).order_by(bills.c.cart_id)).all()
    return [tuple(row) for row in found]


def test_sqlite_gets_the_driver_statements_and_postgres_sqlalchemy_s(
    billing_repository: SqlBillingRepository,
) -> None:
    chosen = bill_statements(billing_repository.store.writer)
    sqlite = billing_repository.store.writer.dialect.name == "sqlite"

    assert isinstance(chosen, SqliteBillStatements) is sqlite
    assert isinstance(chosen, BillStatements)


def test_the_driver_writes_the_rows_sqlalchemy_writes(tmp_path: Path) -> None:
    billing_repository = open_billing_repository(Settings(data_dir=tmp_path))
    try:
        with billing_repository.store.writer.begin() as connection:
            for name, statements in (("a", BillStatements()), ("b", SqliteBillStatements())):
                statements.insert(connection, [BillRow(f"{name}-new", 1, False, LINES)], NOW)
                statements.insert(connection, [BillRow(f"{name}-old", 1, False, "{}")], NOW)
                moved = statements.update(
                    connection, [(BillRow(f"{name}-old", 3, True, LINES), 1)], NOW
                )
                assert moved == 1
        by_sqlalchemy, by_driver = (
            stored_rows(billing_repository)[:2],
            stored_rows(billing_repository)[2:],
        )

        assert [row[1:] for row in by_driver] == [row[1:] for row in by_sqlalchemy]
        assert by_driver[1][1:] == (3, True, LINES, NOW.replace(tzinfo=None))
        with billing_repository.store.writer.begin() as connection:
            assert SqliteBillStatements().select(connection, ["b-old", "b-new", "none"]) == [
                ("b-new", 1, False, LINES),
                ("b-old", 3, True, LINES),
            ]
    finally:
        billing_repository.close()


def test_an_update_of_a_bill_changed_since_it_was_read_touches_nothing(
    billing_repository: SqlBillingRepository,
) -> None:
    statements = bill_statements(billing_repository.store.writer)
    with billing_repository.store.writer.begin() as connection:
        statements.insert(connection, [BillRow("cart-1", 2, False, LINES)], NOW)
        stale = statements.update(connection, [(BillRow("cart-1", 3, True, "{}"), 1)], NOW)
        current = statements.update(connection, [(BillRow("cart-1", 3, True, "{}"), 2)], NOW)

    assert (stale, current) == (0, 1)
    assert statements_read(billing_repository, "cart-1") == [("cart-1", 3, True, "{}")]


def statements_read(
    billing_repository: SqlBillingRepository, cart_id: str
) -> list[tuple[object, ...]]:
    with billing_repository.store.writer.begin() as connection:
        return list(bill_statements(billing_repository.store.writer).select(connection, [cart_id]))


def test_a_bill_inserted_meanwhile_is_a_race_lost(billing_repository: SqlBillingRepository) -> None:
    bill = Bill("cart-2", 1, False, {})
    with billing_repository.transaction() as uow:
        uow.save_bills([bill])

    with pytest.raises(ConcurrentBillUpdate), billing_repository.transaction() as late:
        late.save_bills([bill])  # it never read the row: it inserts, and loses
