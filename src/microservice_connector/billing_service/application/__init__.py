"""Billing's use cases: apply cart events exactly once in effect, and read bills."""

from __future__ import annotations

from microservice_connector.billing_service.application.ledger import (
    BillingLedger,
    CartEventIn,
    Outcome,
)
from microservice_connector.billing_service.application.ports import (
    BillingRepository,
    BillingUnitOfWork,
    ConcurrentBillUpdate,
)

__all__ = [
    "BillingLedger",
    "BillingRepository",
    "BillingUnitOfWork",
    "CartEventIn",
    "ConcurrentBillUpdate",
    "Outcome",
]
