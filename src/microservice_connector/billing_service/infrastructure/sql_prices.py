"""Billing's prices as events: each change is a `PriceChanged` in billing's own store, and
`price_versions` its projection, written in the same transaction; cart events are priced
from it at their own time, so a replay prices them exactly as the first time."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import cast

from sqlalchemy import (
    Connection,
    TextClause,
    and_,
    bindparam,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
)

from microservice_connector.billing_service.domain import Price
from microservice_connector.billing_service.infrastructure.tables import (
    legacy_prices,
    price_versions,
)
from microservice_connector.events.billing import PriceChanged
from microservice_connector.events.envelope import NewEvent
from microservice_connector.events.registry import billing_registry
from microservice_connector.eventstore import AppendRequest, SqlEventStore

PRICE_AGGREGATE = "Price"
# Seeded and migrated prices are in effect for every cart event, however old.
SINCE_ALWAYS = datetime(1970, 1, 1, tzinfo=UTC)
_PAGE = 1000
_registry = billing_registry()
# On PostgreSQL a transaction that prices cart events holds this lock shared, and a price
# change holds it alone before it takes its moment: so a version in effect at an event's time
# has committed before any transaction prices that event, or the pricing waits for it. (A
# change that took its moment while a transaction priced a later event without seeing it
# billed that event at the older price, and a rebuild then billed it otherwise.) SQLite's
# one writer at a time gives the same order. The key is "msp" over the object id of this
# database's (this schema's) `price_versions`, so billing databases in other schemas of one
# PostgreSQL database do not wait for each other.
_PRICING_LOCK_KEY = "x'6D737000'::bigint << 32 | 'price_versions'::regclass::oid::bigint"
_PRICING_SHARED = text(f"SELECT pg_advisory_xact_lock_shared({_PRICING_LOCK_KEY})")
_PRICING_ALONE = text(f"SELECT pg_advisory_xact_lock({_PRICING_LOCK_KEY})")


def price_aggregate_id(item_id: str) -> str:
    """The aggregate id of an item's price in billing's store."""
    return f"price-{item_id}"


_Versions = list[tuple[datetime, Price]]
_COUNT_VERSIONS = select(func.count()).select_from(price_versions)
_VERSIONS_OF_ITEM = (
    select(
        price_versions.c.effective_at, price_versions.c.unit_price_cents, price_versions.c.version
    )
    .where(price_versions.c.item_id == bindparam("item_id"))
    .order_by(price_versions.c.version)
)


class PriceVersions:
    """Every item's price versions as read, shared by the transactions of one process. A
    transaction reuses them while `price_versions` holds as many rows as when they were read:
    versions are only ever added, so pricing costs one count per transaction, not a read per
    item. Safe from several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows = -1
        self._generation = 0
        self._by_item: dict[str, _Versions] = {}

    def current_for(self, rows: int) -> int:
        """Forget what was read unless `price_versions` still holds `rows` rows; the
        generation to read under."""
        with self._lock:
            if rows != self._rows:
                self._rows, self._by_item = rows, {}
                self._generation += 1
            return self._generation

    def versions_of(
        self, item_id: str, generation: int, read: Callable[[], _Versions]
    ) -> _Versions:
        """The item's versions: as read before in `generation`, else `read()`, kept only if
        nothing was forgotten meanwhile (a read may predate the change that caused it)."""
        with self._lock:
            found = self._by_item.get(item_id)
        if found is not None:
            return found
        versions = read()
        with self._lock:
            if generation == self._generation:
                self._by_item[item_id] = versions
        return versions


class PriceHistory:
    """The price versions of the items asked for, each read once per transaction, or taken
    from `shared` when its versions are still current."""

    def __init__(self, connection: Connection, shared: PriceVersions | None = None) -> None:
        self._connection = connection
        self._shared = shared
        self._generation: int | None = None
        self._versions: dict[str, _Versions] = {}
        self._held = False  # the pricing lock, shared

    def price_at(self, item_id: str, at: datetime) -> Price | None:
        """The highest version of the item's price in effect at `at`, or None."""
        versions = self._versions.get(item_id)
        if versions is None:
            versions = self._versions[item_id] = self._read(item_id)
        moment = _utc(at)
        found = None
        for effective_at, price in versions:
            if effective_at <= moment:
                found = price
        return found

    def _read(self, item_id: str) -> _Versions:
        if not self._held:
            _hold_pricing_lock(self._connection, _PRICING_SHARED)
            self._held = True
        if self._shared is None:
            return self._read_versions(item_id)
        if self._generation is None:
            rows = self._connection.execute(_COUNT_VERSIONS).scalar_one()
            self._generation = self._shared.current_for(rows)
        return self._shared.versions_of(
            item_id, self._generation, lambda: self._read_versions(item_id)
        )

    def _read_versions(self, item_id: str) -> _Versions:
        rows = self._connection.execute(_VERSIONS_OF_ITEM, {"item_id": item_id})
        return [(_utc(when), Price(cents, v)) for when, cents, v in rows]


def change_price(
    connection: Connection,
    store: SqlEventStore,
    item_id: str,
    unit_price_cents: int,
    effective_at: datetime | None = None,
) -> PriceChanged:
    """Append the item's next `PriceChanged`, in effect from `effective_at` (default: now,
    once no transaction is pricing cart events), and project it, in the transaction of the
    caller's writer connection (a unit of work's); `ConcurrencyError` if another transaction
    changed it meanwhile."""
    _hold_pricing_lock(connection, _PRICING_ALONE)
    if effective_at is None:
        effective_at = datetime.now(UTC)
    current = connection.execute(
        select(func.max(price_versions.c.version)).where(price_versions.c.item_id == item_id)
    ).scalar_one()
    change = PriceChanged(item_id, unit_price_cents, (current or 0) + 1, effective_at)
    event = NewEvent("PriceChanged", change, datetime.now(UTC))
    request = AppendRequest(price_aggregate_id(item_id), PRICE_AGGREGATE, current or 0, [event])
    store.append_in(connection, request)
    _project(connection, [change])
    return change


def _hold_pricing_lock(connection: Connection, mode: TextClause) -> None:
    """Take the pricing lock (`_PRICING_SHARED` or `_PRICING_ALONE`) until the transaction
    ends, on PostgreSQL."""
    if connection.dialect.name == "postgresql":
        connection.execute(mode)


def current_prices(connection: Connection) -> dict[str, Price]:
    """The latest version of every item's price, by item id."""
    latest = (
        select(price_versions.c.item_id, func.max(price_versions.c.version).label("version"))
        .group_by(price_versions.c.item_id)
        .subquery()
    )
    rows = connection.execute(
        select(price_versions.c.item_id, price_versions.c.unit_price_cents, latest.c.version)
        .join(
            latest,
            and_(
                price_versions.c.item_id == latest.c.item_id,
                price_versions.c.version == latest.c.version,
            ),
        )
        .order_by(price_versions.c.item_id)
    )
    return {item: Price(cents, version) for item, cents, version in rows}


def project_prices(connection: Connection, store: SqlEventStore) -> int:
    """Rebuild `price_versions` from every `PriceChanged` in the store, in the caller's
    transaction; how many versions it holds now."""
    connection.execute(delete(price_versions))
    changes: list[PriceChanged] = []
    after = 0
    while page := store.read_all(after, _PAGE):
        for recorded in page:
            if recorded.event_type == "PriceChanged":
                changes.append(cast(PriceChanged, _registry.decode(recorded)))
        after = page[-1].position
    _project(connection, changes)
    return len(changes)


def seed_prices(connection: Connection, store: SqlEventStore, seed: Mapping[str, int]) -> None:
    """Make the first prices events (version 1, in effect since always): an older database's
    price list if it has one, else `seed`; unless the store holds price events already."""
    if connection.execute(select(price_versions.c.item_id).limit(1)).first() is not None:
        return
    if project_prices(connection, store):
        return
    if inspect(connection).has_table(legacy_prices.name):
        older = select(legacy_prices.c.item_id, legacy_prices.c.unit_price_cents)
        seed = {item_id: cents for item_id, cents in connection.execute(older)}
    for item_id, cents in sorted(seed.items()):
        change_price(connection, store, item_id, cents, SINCE_ALWAYS)


def _project(connection: Connection, changes: list[PriceChanged]) -> None:
    if changes:
        connection.execute(
            insert(price_versions),
            [
                {
                    "item_id": change.item_id,
                    "version": change.version,
                    "unit_price_cents": change.unit_price_cents,
                    "effective_at": _utc(change.effective_at),
                }
                for change in changes
            ],
        )


def _utc(moment: datetime) -> datetime:
    """`moment` in UTC; a naive one (SQLite gives them back so) is taken to be UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
