"""Billing at the edges of what the API accepts, on SQLite and PostgreSQL alike: a cart id
of 64 characters, an invoice above 2^31 cents, an id or a quantity the cart service would
refuse, a total no column holds (from a price set past the API's limit). Each ends in a
right invoice or one clear dead letter, and the other carts in the same batches are billed
meanwhile."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest
from sqlalchemy import create_engine, inspect, text

from microservice_connector.billing_service.application import BillingLedger
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.infrastructure.sql_repository import (
    SqlBillingRepository,
)
from microservice_connector.billing_service.main import MAX_ATTEMPTS, open_billing_repository
from microservice_connector.events.cart import (
    MAX_QUANTITY,
    CartCheckedOut,
    CartEvent,
    ItemAdded,
    ItemRemoved,
)
from microservice_connector.events.registry import default_registry
from microservice_connector.eventstore.engine import parse_database_url
from microservice_connector.messaging.memory import InMemoryBroker, InMemoryDeadLetters
from microservice_connector.messaging.message import Delivery, Message
from microservice_connector.messaging.middleware import chain, dead_letter
from microservice_connector.messaging.settlement import Ack, BatchHandler, Settlement
from microservice_connector.settings import Settings

NOW = datetime(2026, 11, 25, tzinfo=UTC)
LONGEST_ID = "c" * 64
PAST_INT32 = 2_500_000_000  # 200,000 of item-003 at 125.00: above 2^31 - 1 cents
BEYOND_INT64 = 2**62  # quantity: times any price, no 64-bit column could hold the total


@pytest.fixture
def repository(billing_repository: SqlBillingRepository) -> SqlBillingRepository:
    """Billing's database, on SQLite and then PostgreSQL (conftest's `billing_repository`)."""
    return billing_repository


class Pipeline:
    """Billing's handler behind the dead-letter middleware, fed until nothing is retried."""

    def __init__(self, repository: SqlBillingRepository) -> None:
        self.dead_letters = InMemoryDeadLetters(InMemoryBroker())
        # As the service wires it: on the event loop on SQLite, on a worker thread elsewhere.
        on_sqlite = repository.store.writer.dialect.name == "sqlite"
        handler = CartEventHandler(
            BillingLedger(repository), default_registry(), apply_on_loop=on_sqlite
        )
        self._handle: BatchHandler = chain(
            handler, dead_letter(self.dead_letters, max_attempts=MAX_ATTEMPTS)
        )

    def deliver(self, messages: list[Message]) -> list[Settlement]:
        """Deliver `messages` as one batch, again and again (as the broker would) until
        each is settled; the final outcome of each."""
        final: dict[int, Settlement] = {}
        for attempt in range(1, MAX_ATTEMPTS + 1):
            waiting = [i for i in range(len(messages)) if i not in final]
            if not waiting:
                break
            batch = [_delivery(messages[i], attempt) for i in waiting]
            for i, outcome in zip(waiting, asyncio.run(self._handle(batch)), strict=True):
                if isinstance(outcome, Ack):
                    final[i] = outcome
        assert len(final) == len(messages), "a message was neither applied nor dead-lettered"
        return [final[i] for i in range(len(messages))]

    def errors(self) -> list[str]:
        """The errors of the dead letters, oldest first."""
        return [letter.error for letter in asyncio.run(self.dead_letters.list())]


def test_a_cart_id_of_64_characters_gets_its_invoice(repository: SqlBillingRepository) -> None:
    pipeline = Pipeline(repository)
    outcomes = pipeline.deliver(
        [_added(LONGEST_ID, 1, "item-001", 2), _checkout(LONGEST_ID, 2), *_beside("a")]
    )
    assert [o.label for o in outcomes if isinstance(o, Ack)] == ["applied"] * 4
    invoice = repository.invoice(LONGEST_ID)
    assert invoice is not None
    assert (invoice.invoice_id, invoice.total_cents) == (f"inv-{LONGEST_ID}", 2 * 1999)
    assert pipeline.errors() == []


def test_an_invoice_above_2_to_the_31_cents_is_right(repository: SqlBillingRepository) -> None:
    pipeline = Pipeline(repository)
    pipeline.deliver([*_filled("big", "item-003", 200_000), *_beside("b")])
    invoice = repository.invoice("big")
    assert invoice is not None
    assert invoice.total_cents == PAST_INT32
    assert pipeline.errors() == []
    assert repository.invoice("beside-b") is not None


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        (ItemAdded("odd", "item-001", BEYOND_INT64, NOW), "adds at most 10000"),
        (ItemAdded("odd", "item-001", MAX_QUANTITY + 1, NOW), "adds at most 10000"),
        (ItemAdded("odd", "item-001", 0, NOW), "quantity must be at least 1, got 0"),
        (ItemRemoved("odd", "item-001", -5, NOW), "quantity must be at least 1, got -5"),
        (ItemAdded("odd", "", 1, NOW), "item_id '' is not an id"),
        (ItemAdded("odd", "item 1", 1, NOW), "item_id 'item 1' is not an id"),
        (ItemAdded("odd", "i" * 1_000_000, 1, NOW), "(1000000 characters) is not an id"),
    ],
)
def test_an_event_the_cart_service_could_not_store_is_dead_lettered_at_once(
    repository: SqlBillingRepository, event: CartEvent, reason: str
) -> None:
    pipeline = Pipeline(repository)
    outcomes = pipeline.deliver([_message("odd", 1, event), *_beside("c")])
    assert [o.label for o in outcomes if isinstance(o, Ack)] == [
        "dead-lettered",
        "applied",
        "applied",
    ]
    [error] = pipeline.errors()
    assert reason in error
    assert "gave up" not in error  # no retry could make it valid
    assert repository.bill("odd") is None
    assert repository.invoice("beside-c") is not None


def test_a_total_no_column_holds_is_dead_lettered_alone(repository: SqlBillingRepository) -> None:
    # Only a price set past the API's limit (straight in the database) can make one now.
    repository.set_price("item-009", BEYOND_INT64)
    pipeline = Pipeline(repository)
    later = datetime.now(UTC)  # priced at the price in effect then: the one just set
    outcomes = pipeline.deliver(
        [
            _message("huge", 1, ItemAdded("huge", "item-009", 4, later)),
            _message("huge", 2, CartCheckedOut("huge", later)),
            *_beside("e"),
        ]
    )
    labels = [o.label for o in outcomes if isinstance(o, Ack)]
    assert labels[2:] == ["applied", "applied"]
    assert "dead-lettered" in labels[:2]
    [error] = pipeline.errors()
    assert f"gave up after {MAX_ATTEMPTS} attempts" in error
    assert "refused billing's write" in error
    assert repository.invoice("huge") is None
    assert repository.invoice("beside-e") is not None


def test_removing_everything_of_a_large_holding_is_billed(
    repository: SqlBillingRepository,
) -> None:
    # The cart service removes all of an item in one event when no quantity is given: it may
    # exceed what one ItemAdded adds.
    pipeline = Pipeline(repository)
    adds = _filled("all-out", "item-001", 3 * MAX_QUANTITY)[:-1]
    removed = _message("all-out", 4, ItemRemoved("all-out", "item-001", 3 * MAX_QUANTITY, NOW))
    pipeline.deliver([*adds, removed, _added("all-out", 5, "item-002", 1), _checkout("all-out", 6)])
    invoice = repository.invoice("all-out")
    assert invoice is not None
    assert list(invoice.lines) == ["item-002"]
    assert pipeline.errors() == []


@pytest.mark.parametrize("cart_id", ["c" * 65, "c" * 10_000, "cart 1", "cart/1", ""])
def test_an_aggregate_id_the_api_refuses_is_dead_lettered_at_once(
    repository: SqlBillingRepository, cart_id: str
) -> None:
    pipeline = Pipeline(repository)
    outcomes = pipeline.deliver([_added(cart_id, 1, "item-001", 1), *_beside("d")])
    assert [o.label for o in outcomes if isinstance(o, Ack)] == [
        "dead-lettered",
        "applied",
        "applied",
    ]
    [error] = pipeline.errors()
    assert ("missing headers aggregate-id" if not cart_id else "is not an id") in error
    assert repository.invoice("beside-d") is not None


@pytest.mark.parametrize("version", ["\xb2", "1\xb9", "9" * 5_000, "-2", ""])
def test_a_version_header_that_states_no_version_is_dead_lettered_at_once(
    repository: SqlBillingRepository, version: str
) -> None:
    # "²" passes str.isdigit() and fails int(): recording the refusal must not fail too.
    message = _added("odd-version", 1, "item-001", 1)
    message.headers["aggregate-version"] = version
    pipeline = Pipeline(repository)
    outcomes = pipeline.deliver([message, *_beside("v")])
    assert [o.label for o in outcomes if isinstance(o, Ack)] == [
        "dead-lettered",
        "applied",
        "applied",
    ]
    [error] = pipeline.errors()
    assert "aggregate-version" in error
    assert repository.invoice("beside-v") is not None


def _beside(tag: str) -> list[Message]:
    return [_added(f"beside-{tag}", 1, "item-002", 1), _checkout(f"beside-{tag}", 2)]


def _filled(cart_id: str, item: str, quantity: int) -> list[Message]:
    """`quantity` of `item` in adds of at most `MAX_QUANTITY`, as commands add them, then
    the checkout."""
    adds = [
        _added(cart_id, version, item, min(MAX_QUANTITY, quantity - done))
        for version, done in enumerate(range(0, quantity, MAX_QUANTITY), start=1)
    ]
    return [*adds, _checkout(cart_id, len(adds) + 1)]


def _added(cart_id: str, version: int, item: str, quantity: int) -> Message:
    return _message(cart_id, version, ItemAdded(cart_id, item, quantity, NOW))


def _checkout(cart_id: str, version: int) -> Message:
    return _message(cart_id, version, CartCheckedOut(cart_id, NOW))


def _message(cart_id: str, version: int, event: CartEvent) -> Message:
    event_id = f"ev-{abs(hash(cart_id)) % 10**9}-{version}"
    headers = {
        "event-id": event_id,
        "event-type": type(event).__name__,
        "aggregate-id": cart_id,
        "aggregate-version": str(version),
    }
    return Message(event_id, "cart.events", msgspec.json.encode(event), headers)


def _delivery(message: Message, attempt: int) -> Delivery:
    async def settle(*_: object) -> None:
        return None

    return Delivery(message, attempt, 1, settle, settle)


def test_an_older_postgresql_database_is_widened_at_startup(
    postgres_url: str, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, billing_database_url=postgres_url)
    open_billing_repository(settings).close()
    engine = create_engine(parse_database_url(postgres_url))
    narrowed = {
        ("events", "aggregate_id"): "varchar(64)",
        ("snapshots", "aggregate_id"): "varchar(64)",
        ("invoices", "invoice_id"): "varchar(80)",
        ("invoices", "total_cents"): "integer",
    }
    with engine.begin() as connection:  # as the code before this change made them
        for (table, column), kind in narrowed.items():
            connection.execute(text(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {kind}"))
    repository = open_billing_repository(settings)
    try:
        Pipeline(repository).deliver(_filled(LONGEST_ID, "item-003", 200_000))
        invoice = repository.invoice(LONGEST_ID)
    finally:
        repository.close()
    with engine.connect() as connection:
        columns = {
            (table, column["name"]): str(column["type"])
            for table in ("events", "snapshots", "invoices")
            for column in inspect(connection).get_columns(table)
        }
    engine.dispose()
    assert {key: columns[key] for key in narrowed} == {
        ("events", "aggregate_id"): "VARCHAR(128)",
        ("snapshots", "aggregate_id"): "VARCHAR(128)",
        ("invoices", "invoice_id"): "VARCHAR(128)",
        ("invoices", "total_cents"): "BIGINT",
    }
    assert invoice is not None
    assert invoice.total_cents == PAST_INT32
