"""Billing's HTTP reads on SQLite go through reader connections: while a unit of work holds
the file's write lock (`BEGIN IMMEDIATE`), GETs still answer at once, with what was
committed before it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from microservice_connector.billing_service.application import BillingLedger, CartEventIn
from microservice_connector.billing_service.domain import BillLine
from microservice_connector.billing_service.infrastructure.http_api import create_billing_app
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.cart import ItemAdded
from microservice_connector.settings import Settings

NOW = datetime(2026, 11, 25, tzinfo=UTC)
READ_DEADLINE_S = 5.0  # a read queued behind the writer would wait its pool's 30 s
HOLD_LIMIT_S = 60.0


@pytest.fixture
def repository(tmp_path: Path) -> Iterator[SqlBillingRepository]:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    BillingLedger(repository).apply_batch(
        [CartEventIn("c-1", "c", 1, ItemAdded("c", "item-001", 1, NOW))]
    )
    yield repository
    repository.close()


def get_all(app: FastAPI, paths: list[str]) -> list[httpx.Response]:
    """GET each path from the app over ASGI, in order."""

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://billing") as client:
            return [await client.get(path) for path in paths]

    return asyncio.run(go())


def write_lock_is_taken(database: Path) -> bool:
    """Whether another connection holds the SQLite file's write lock right now."""
    probe = sqlite3.connect(database, timeout=0, isolation_level=None)
    refusal = ""
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        refusal = str(exc)
    finally:
        probe.close()
    return "locked" in refusal


def test_a_bill_is_read_while_a_unit_of_work_holds_the_write_lock(
    repository: SqlBillingRepository, tmp_path: Path
) -> None:
    app = create_billing_app(repository, checks={})
    holding, release = threading.Event(), threading.Event()

    def hold_the_writer() -> None:
        with repository.transaction() as uow:
            [bill] = uow.get_bills(["c"]).values()
            bill.lines["item-001"] = BillLine(7, 1999, price_version=1)
            bill.last_version = 2
            uow.save_bills([bill])
            holding.set()
            release.wait(HOLD_LIMIT_S)

    holder = threading.Thread(target=hold_the_writer)
    reads = ThreadPoolExecutor(1)
    holder.start()
    try:
        assert holding.wait(HOLD_LIMIT_S)
        assert write_lock_is_taken(tmp_path / "billing.db")
        answered = reads.submit(get_all, app, ["/billing/carts/c", "/prices", "/invoices/c"])
        bill, prices, invoice = answered.result(timeout=READ_DEADLINE_S)
    finally:
        release.set()
        holder.join()
        reads.shutdown()
    assert bill.status_code == 200
    assert (bill.json()["last_version"], bill.json()["total_cents"]) == (1, 1999)  # committed
    assert prices.status_code == 200
    assert {"item_id": "item-001", "unit_price_cents": 1999, "version": 1} in prices.json()
    assert invoice.status_code == 404
    assert repository.bill("c").last_version == 2  # type: ignore[union-attr]
