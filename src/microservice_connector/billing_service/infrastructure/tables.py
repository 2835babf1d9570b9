"""Billing's read model tables; its events and outbox use the shared event store schema."""

from __future__ import annotations

from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, String, Table, Text

metadata = MetaData()

bills = Table(
    "bills",
    metadata,
    Column("cart_id", String(64), primary_key=True),
    Column("last_version", Integer, nullable=False),
    Column("checked_out", Boolean, nullable=False),
    Column("lines", Text, nullable=False),  # JSON {item_id: {quantity, unit_price_cents, unpriced}}
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

prices = Table(
    "prices",
    metadata,
    Column("item_id", String(64), primary_key=True),
    Column("unit_price_cents", Integer, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

invoices = Table(
    "invoices",
    metadata,
    Column("invoice_id", String(80), primary_key=True),
    Column("cart_id", String(64), nullable=False, unique=True),
    Column("lines", Text, nullable=False),
    Column("total_cents", Integer, nullable=False),
    Column("issued_at", DateTime(timezone=True), nullable=False),
)

DEFAULT_PRICES = {
    "item-001": 1999,
    "item-002": 550,
    "item-003": 12500,
    "item-004": 249,
    "item-005": 8900,
}
