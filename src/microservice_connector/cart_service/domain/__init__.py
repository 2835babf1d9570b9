"""The cart's domain: the `ShoppingCart` aggregate and its rules."""

from __future__ import annotations

from microservice_connector.cart_service.domain.errors import (
    CartClosed,
    CartRuleViolation,
    EmptyCart,
    InvalidCommand,
    NotEnoughItems,
)
from microservice_connector.cart_service.domain.shopping_cart import ShoppingCart
from microservice_connector.events.cart import MAX_QUANTITY

__all__ = [
    "MAX_QUANTITY",
    "CartClosed",
    "CartRuleViolation",
    "EmptyCart",
    "InvalidCommand",
    "NotEnoughItems",
    "ShoppingCart",
]
