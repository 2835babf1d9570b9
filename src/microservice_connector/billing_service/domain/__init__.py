"""Billing's domain: bills priced from a price list, gated by event version."""

from __future__ import annotations

from microservice_connector.billing_service.domain.bill import (
    Bill,
    BillLine,
    Invoice,
    Price,
    PriceLookup,
    VersionCheck,
)

__all__ = ["Bill", "BillLine", "Invoice", "Price", "PriceLookup", "VersionCheck"]
