"""The cart's use cases: load, decide, append, with bounded retries on conflicts."""

from __future__ import annotations

from microservice_connector.cart_service.application.cart_service import (
    CartNotFound,
    CartService,
    CartView,
    RetriesExhausted,
)

__all__ = ["CartNotFound", "CartService", "CartView", "RetriesExhausted"]
