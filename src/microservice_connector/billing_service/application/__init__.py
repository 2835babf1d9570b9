"""Billing's use cases: apply cart events exactly once in effect, and read bills."""

from __future__ import annotations

from microservice_connector.billing_service.application.ledger import (
    BillingLedger,
    CartEventIn,
    Outcome,
)
from microservice_connector.billing_service.application.ports import (
    BillingRepository,
    BillingTransaction,
    ConcurrentBillUpdate,
)

__all__ = [
    "BillingLedger",
    "BillingRepository",
    "BillingTransaction",
    "CartEventIn",
    "ConcurrentBillUpdate",
    "Outcome",
]
