"""Billing's read model tables; its events and outbox use the shared event store schema.

Ids are as wide as the API allows (a prefixed id wider), money is 64-bit: PostgreSQL
enforces both, so a narrower column would refuse valid input that SQLite takes."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

from microservice_connector.events.ids import MAX_ID_LENGTH, STORED_ID_LENGTH

metadata = MetaData()

bills = Table(
    "bills",
    metadata,
    Column("cart_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("last_version", Integer, nullable=False),
    Column("checked_out", Boolean, nullable=False),
    Column("lines", Text, nullable=False),  # JSON {item_id: {quantity, unit_price_cents, unpriced}}
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# Every version of every item's price, projected from billing's own `PriceChanged` events
# in the transaction that appends them: what cart events are priced from, by their time.
price_versions = Table(
    "price_versions",
    metadata,
    Column("item_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("effective_at", DateTime(timezone=True), nullable=False),
)

# The price list before prices were events: read once from older databases, to turn it
# into `PriceChanged` events; never created.
legacy = MetaData()
legacy_prices = Table(
    "prices",
    legacy,
    Column("item_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("unit_price_cents", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(STORED_ID_LENGTH), primary_key=True),
    Column("cart_id", String(MAX_ID_LENGTH), nullable=False, unique=True),
    Column("lines", Text, nullable=False),
    Column("total_cents", BigInteger, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

DEFAULT_PRICES = {
    "item-001": 1999,
    "item-002": 550,
    "item-003": 12500,
    "item-004": 249,
    "item-005": 8900,
}
