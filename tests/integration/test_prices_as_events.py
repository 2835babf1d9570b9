"""Prices are billing's own events, on SQLite and PostgreSQL: every change a `PriceChanged`
with its version, the price list projected from them, an older database's price list
turned into events once, and each cart event priced at the price of its own time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from microservice_connector.billing_service.application import (
    BillingLedger,
    CartEventIn,
    ConcurrentBillUpdate,
)
from microservice_connector.billing_service.domain import Price
from microservice_connector.billing_service.infrastructure.http_api import create_billing_app
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.infrastructure.tables import legacy
from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.cart import CartCheckedOut, ItemAdded
from microservice_connector.eventstore.engine import parse_database_url
from microservice_connector.settings import Settings


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return Settings(data_dir=tmp_path, billing_database_url=url)


@pytest.fixture
def repository(settings: Settings) -> Iterator[SqlBillingRepository]:
    repository = open_billing_repository(settings)
    yield repository
    repository.close()


def test_each_change_is_an_event_with_the_next_version(repository: SqlBillingRepository) -> None:
    for cents in (100, 200, 300):
        repository.set_price("item-x", cents)
    changes = [
        (event.aggregate_id, event.version)
        for event in repository.store.read_all(0, 1000)
        if event.event_type == "PriceChanged" and event.aggregate_id == "price-item-x"
    ]
    assert changes == [("price-item-x", 1), ("price-item-x", 2), ("price-item-x", 3)]
    assert repository.prices()["item-x"] == Price(300, 3)


def test_cart_events_are_priced_at_their_own_time_however_late_they_come(
    repository: SqlBillingRepository,
) -> None:
    moments = []
    for cents in (100, 200, 300):
        repository.set_price("item-x", cents)
        moments.append(datetime.now(UTC) + timedelta(microseconds=1))
    # Applied only now, after the last change: each still takes the price of its moment.
    ledger = BillingLedger(repository)
    ledger.apply_batch(
        [
            CartEventIn(f"e-{n}", f"cart-{n}", 1, ItemAdded(f"cart-{n}", "item-x", 1, moment))
            for n, moment in enumerate(moments)
        ]
    )
    lines = [repository.bill(f"cart-{n}").lines["item-x"] for n in range(3)]  # type: ignore[union-attr]
    assert [(line.unit_price_cents, line.price_version) for line in lines] == [
        (100, 1),
        (200, 2),
        (300, 3),
    ]


def test_a_price_another_instance_changed_prices_this_ones_next_event(
    settings: Settings, repository: SqlBillingRepository
) -> None:
    ledger = BillingLedger(repository)

    def add(n: int) -> tuple[int, int]:
        at = datetime.now(UTC)
        ledger.apply_batch(
            [CartEventIn(f"e-{n}", f"c-{n}", 1, ItemAdded(f"c-{n}", "item-x", 1, at))]
        )
        line = repository.bill(f"c-{n}").lines["item-x"]  # type: ignore[union-attr]
        return line.unit_price_cents, line.price_version

    repository.set_price("item-x", 100)
    assert add(1) == (100, 1)  # this instance has now read item-x's versions
    other = open_billing_repository(settings)
    try:
        other.set_price("item-x", 250)
    finally:
        other.close()
    assert add(2) == (250, 2)
    with repository.transaction() as uow:
        uow.change_price("item-x", 999, datetime.now(UTC))
        assert uow.price_of("item-x", datetime.now(UTC) + timedelta(seconds=1)) == Price(999, 3)
        uow.rollback()
    assert add(3) == (250, 2)  # the change rolled back is nobody's price


def test_an_invoice_is_dated_by_its_checkout(repository: SqlBillingRepository) -> None:
    checked_out_at = datetime(2026, 11, 30, 12, 0, 1, 250_000, tzinfo=UTC)
    BillingLedger(repository).apply_batch(
        [
            CartEventIn("e-1", "c", 1, ItemAdded("c", "item-001", 1, checked_out_at)),
            CartEventIn("e-2", "c", 2, CartCheckedOut("c", checked_out_at)),
        ]
    )
    invoice = repository.invoice("c")
    assert invoice is not None
    assert invoice.issued_at == checked_out_at


def test_instances_changing_one_price_at_once_never_share_a_version(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, billing_database_url=postgres_url)
    instances = [open_billing_repository(settings) for _ in range(3)]
    got: list[Price] = []
    refused: list[ConcurrentBillUpdate] = []

    def change(repository: SqlBillingRepository, cents: int) -> None:
        for n in range(4):
            try:
                got.append(repository.set_price("item-x", cents + n))
            except ConcurrentBillUpdate as exc:  # answered 409: the caller may try again
                refused.append(exc)

    try:
        threads = [
            threading.Thread(target=change, args=(instance, 1000 * (i + 1)))
            for i, instance in enumerate(instances)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        latest = instances[0].prices()["item-x"]
    finally:
        for instance in instances:
            instance.close()
    assert len(got) + len(refused) == 12
    assert sorted(price.version for price in got) == list(range(1, len(got) + 1))
    assert latest == max(got, key=lambda price: price.version)


def test_an_older_price_list_becomes_events_once(settings: Settings) -> None:
    engine = create_engine(parse_database_url(settings.billing_db_url()))
    with engine.begin() as connection:  # a database from before prices were events
        legacy.create_all(connection)
        connection.execute(
            legacy.tables["prices"].insert(),
            [
                {"item_id": "old-item", "unit_price_cents": 4200, "updated_at": datetime.now(UTC)},
                {"item_id": "item-001", "unit_price_cents": 1500, "updated_at": datetime.now(UTC)},
            ],
        )
    engine.dispose()
    for _ in range(2):  # the second start finds the events and adds none
        repository = open_billing_repository(settings)
        try:
            prices = repository.prices()
            changes = sum(
                event.event_type == "PriceChanged" for event in repository.store.read_all(0, 100)
            )
        finally:
            repository.close()
        assert prices == {"item-001": Price(1500, 1), "old-item": Price(4200, 1)}
        assert changes == 2


def test_prices_written_as_protobuf_project_back_after_a_reset(settings: Settings) -> None:
    repository = open_billing_repository(settings.model_copy(update={"serializer": "protobuf"}))
    try:
        repository.set_price("item-001", 2222)
        repository.reset_read_model()
        prices = repository.prices()
        content_types = {event.content_type for event in repository.store.read_all(0, 100)}
    finally:
        repository.close()
    assert content_types == {"application/x-protobuf"}
    assert prices["item-001"] == Price(2222, 2)
    assert prices["item-002"] == Price(550, 1)


def test_the_price_api_keeps_its_contract_and_shows_versions(
    repository: SqlBillingRepository,
) -> None:
    app = create_billing_app(repository, checks={})
    with TestClient(app) as client:
        put = client.put("/prices/item-x", json={"unit_price_cents": 120})
        again = client.put("/prices/item-x", json={"unit_price_cents": 130})
        bad = client.put("/prices/item-x", json={"unit_price_cents": -1})
        listed = {price["item_id"]: price for price in client.get("/prices").json()}
    assert (put.status_code, put.json()) == (
        200,
        {"item_id": "item-x", "unit_price_cents": 120, "version": 1},
    )
    assert again.json()["version"] == 2
    assert bad.status_code == 422
    assert listed["item-x"] == {"item_id": "item-x", "unit_price_cents": 130, "version": 2}
    assert listed["item-001"] == {"item_id": "item-001", "unit_price_cents": 1999, "version": 1}


def _waiting_for_the_pricing_lock(url: str) -> bool:
    """Whether a transaction of the database at `url` waits for billing's pricing lock."""
    engine = create_engine(parse_database_url(url))
    try:
        with engine.connect() as connection:
            return bool(
                connection.execute(
                    text(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                        " AND NOT granted AND objsubid = 1 AND classid = x'6D737000'::bigint"
                        " AND database = (SELECT oid FROM pg_database"
                        " WHERE datname = current_database())"
                    )
                ).scalar_one()
            )
    finally:
        engine.dispose()


def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


@pytest.mark.postgres
def test_a_price_change_and_the_pricing_of_cart_events_take_turns(
    postgres_url: str, tmp_path: Path
) -> None:
    # A change's moment is taken when no transaction is pricing events: else an event after
    # that moment, priced by a transaction that could not see the change yet, took the
    # older price, and a rebuild priced it otherwise.
    repository = open_billing_repository(
        Settings(data_dir=tmp_path, billing_database_url=postgres_url)
    )
    waiting = partial(_waiting_for_the_pricing_lock, postgres_url)
    try:
        repository.set_price("item-x", 100)
        changed: list[Price] = []
        with repository.transaction() as pricing:
            assert pricing.price_of("item-x", datetime.now(UTC)) == Price(100, 1)
            change = threading.Thread(
                target=lambda: changed.append(repository.set_price("item-x", 200))
            )
            change.start()
            _until(waiting, "price change waiting for the pricing under way")
            priced_until = datetime.now(UTC)
        change.join(10)
        assert changed == [Price(200, 2)]
        with repository.transaction() as later:  # the change took effect after that pricing
            assert later.price_of("item-x", priced_until) == Price(100, 1)

        priced: list[Price | None] = []
        with repository.transaction() as changing:
            changing.change_price("item-x", 300)
            in_effect = datetime.now(UTC)

            def price() -> None:
                with repository.transaction() as uow:
                    priced.append(uow.price_of("item-x", in_effect))

            pricing_thread = threading.Thread(target=price)
            pricing_thread.start()
            _until(waiting, "pricing waiting for the price change under way")
        pricing_thread.join(10)
        assert priced == [Price(300, 3)]  # it waited, and then saw the change
    finally:
        repository.close()
