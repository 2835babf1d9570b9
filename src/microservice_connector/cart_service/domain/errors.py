"""The reasons a cart refuses a command."""

from __future__ import annotations


class InvalidCommand(ValueError):
    """The command itself is malformed (a quantity out of range); the cart was not consulted."""


class CartRuleViolation(Exception):
    """The cart's current state forbids the command."""


class NotEnoughItems(CartRuleViolation):
    """Removing more of an item than the cart holds."""


class EmptyCart(CartRuleViolation):
    """Checking out a cart that holds nothing."""


class CartClosed(CartRuleViolation):
    """Changing a cart that has been checked out."""
