"""Billing's events: what other services may learn from billing."""

from __future__ import annotations

from datetime import datetime

import msgspec


class InvoiceLine(msgspec.Struct, frozen=True):
    """One item on an invoice, priced when the cart last changed it."""

    quantity: int
    unit_price_cents: int
    amount_cents: int
    unpriced: bool = False


class InvoiceIssued(msgspec.Struct, frozen=True):
    """Invoice `invoice_id` was issued for checked-out cart `cart_id`."""

    invoice_id: str
    cart_id: str
    lines: dict[str, InvoiceLine]
    total_cents: int
    timestamp: datetime


BILLING_EVENTS: tuple[type[InvoiceIssued], ...] = (InvoiceIssued,)
