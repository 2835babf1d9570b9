"""Billing's storage on SQLAlchemy: units of work on billing's own writer for what changes,
reads beside it for what the API shows, and billing's events (prices, invoices) in its store."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from sqlalchemy import Engine, delete

from microservice_connector.billing_service.application.ports import ConcurrentBillUpdate
from microservice_connector.billing_service.domain import Bill, Invoice, Price
from microservice_connector.billing_service.infrastructure.bill_reads import (
    BillStamp,
    SqlBillReads,
)
from microservice_connector.billing_service.infrastructure.sql_prices import (
    PriceVersions,
    project_prices,
    seed_prices,
)
from microservice_connector.billing_service.infrastructure.tables import (
    DEFAULT_PRICES,
    bills,
    invoices,
    metadata,
)
from microservice_connector.billing_service.infrastructure.unit_of_work import (
    SqlBillingUnitOfWork,
)
from microservice_connector.eventstore import ConcurrencyError, SqlEventStore
from microservice_connector.eventstore.engine import create_schema
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.failures import DataRejected

__all__ = ["BILLING_TOPIC", "PRICE_RETRIES", "BillStamp", "SqlBillingRepository"]

BILLING_TOPIC = "billing.events"
PRICE_RETRIES = 10


class SqlBillingRepository:
    """Billing's read model and outbox in one database (SQLite `billing.db` or PostgreSQL),
    reached through connections of billing's own: `writer` for its units of work, `reader`
    for its reads (on PostgreSQL they may be one pooled engine)."""

    def __init__(
        self,
        store: SqlEventStore,
        *,
        writer: Engine,
        reader: Engine,
        seed: Mapping[str, int] = DEFAULT_PRICES,
    ) -> None:
        """Create the tables and, in a new database, the first prices as events."""
        self._store, self._writer, self._reader = store, writer, reader
        self._prices = PriceVersions()  # every unit of work's prices, while still current
        self._reads = SqlBillReads(reader)
        create_schema(writer, metadata)  # instances starting together take turns
        try:
            with self.transaction() as uow:
                seed_prices(uow.connection, store, seed)
        except (ConcurrencyError, ConcurrentBillUpdate):
            pass  # another instance seeded the prices first
        except DataRejected as exc:
            raise DatabaseUnavailable(str(exc)) from exc

    @property
    def store(self) -> SqlEventStore:
        """The event store holding billing's own events and outbox."""
        return self._store

    def transaction(self) -> SqlBillingUnitOfWork:
        """A new unit of work on billing's writer (`with` it): commits on `commit()` or when
        the block ends cleanly, else rolls back; raises what a database failure means
        (`failure_meaning`): `ConcurrentBillUpdate` for a race lost to another instance,
        `DatabaseUnavailable` for what may heal, `DataRejected` for refused data."""
        return SqlBillingUnitOfWork(self._writer, self._store, self._prices)

    def bill(self, cart_id: str) -> Bill | None:
        """The cart's running bill, or None before its first event; never waits for a writer."""
        return self._reads.bill(cart_id)

    def invoice(self, cart_id: str) -> Invoice | None:
        """The cart's invoice, or None before checkout; never waits for a writer."""
        return self._reads.invoice(cart_id)

    def prices(self) -> dict[str, Price]:
        """The latest version of every item's price, by item id; never waits for a writer."""
        return self._reads.prices()

    def stamp(self, cart_id: str) -> BillStamp | None:
        """The cart's last applied version and when, or None before its first event."""
        return self._reads.stamp(cart_id)

    def last_versions(self, cart_ids: Collection[str]) -> dict[str, int]:
        """The last applied version of each of the carts that has a bill; never waits for a
        writer."""
        return self._reads.last_versions(cart_ids)

    def summary(self) -> dict[str, int]:
        """Every bill's total by cart id, for comparing rebuilds."""
        return self._reads.summary()

    def feed_position(self) -> int:
        """The cart feed's last position billing handled, as committed (0 before the first)."""
        return self._reads.feed_position()

    def set_price(self, item_id: str, unit_price_cents: int) -> Price:
        """Record the item's next price as a `PriceChanged` event, in effect from now (once no
        cart event is being priced): a bill line takes it when its quantity next changes at
        or after this moment."""
        for _ in range(PRICE_RETRIES):
            try:
                with self.transaction() as uow:
                    price = uow.change_price(item_id, unit_price_cents)
                    uow.commit()
                return price
            except (ConcurrencyError, ConcurrentBillUpdate):
                continue  # another instance took that version first: try the next one
        raise ConcurrentBillUpdate(
            f"the price of {item_id} kept changing meanwhile ({PRICE_RETRIES} tries); try again"
        )

    def reset_read_model(self) -> None:
        """Delete every bill and invoice, and project the prices again from billing's own
        `PriceChanged` events (which stay, as do the others)."""
        with self.transaction() as uow:
            uow.connection.execute(delete(bills))
            uow.connection.execute(delete(invoices))
            project_prices(uow.connection, self._store)
            uow.commit()

    def close(self) -> None:
        """Dispose of billing's connections and its store's."""
        for engine in {self._writer, self._reader} - {self._store.writer, self._store.reader}:
            engine.dispose()
        self._store.close()
