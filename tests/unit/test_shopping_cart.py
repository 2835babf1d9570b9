"""The cart's own rules, decided without any I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from microservice_connector.cart_service.domain import (
    CartClosed,
    EmptyCart,
    InvalidCommand,
    NotEnoughItems,
    ShoppingCart,
)
from microservice_connector.events.cart import CartCheckedOut, ItemAdded, ItemRemoved

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def cart_with(*events: object) -> ShoppingCart:
    return ShoppingCart.replay("cart-1", events)  # type: ignore[arg-type]


def test_a_new_cart_is_open_empty_and_at_version_zero() -> None:
    cart = ShoppingCart("cart-1")
    assert (cart.version, cart.status, cart.items, cart.exists) == (0, "open", {}, False)


def test_adding_decides_an_item_added_event_without_changing_the_cart() -> None:
    cart = ShoppingCart("cart-1")
    assert cart.add_item("item-1", 2, NOW) == [ItemAdded("cart-1", "item-1", 2, NOW)]
    assert cart.items == {}
    assert cart.version == 0


def test_applying_events_evolves_state_and_version() -> None:
    cart = cart_with(
        ItemAdded("cart-1", "a", 2, NOW),
        ItemAdded("cart-1", "a", 3, NOW),
        ItemAdded("cart-1", "b", 1, NOW),
        ItemRemoved("cart-1", "a", 4, NOW),
    )
    assert cart.items == {"a": 1, "b": 1}
    assert cart.version == 4


@pytest.mark.parametrize("quantity", [0, -1, 10_001, 10**9])
def test_quantity_must_be_between_1_and_10000(quantity: int) -> None:
    cart = cart_with(ItemAdded("cart-1", "a", 5, NOW))
    with pytest.raises(InvalidCommand, match=r"1\.\.10000"):
        cart.add_item("a", quantity, NOW)
    with pytest.raises(InvalidCommand, match=r"1\.\.10000"):
        cart.remove_item("a", quantity, NOW)


@pytest.mark.parametrize("quantity", [1, 10_000])
def test_quantity_bounds_are_inclusive(quantity: int) -> None:
    assert ShoppingCart("cart-1").add_item("a", quantity, NOW)[0].quantity == quantity  # type: ignore[union-attr]


def test_cannot_remove_more_than_the_cart_holds() -> None:
    cart = cart_with(ItemAdded("cart-1", "a", 2, NOW))
    with pytest.raises(NotEnoughItems, match="holds 2 of a; cannot remove 3"):
        cart.remove_item("a", 3, NOW)


def test_cannot_remove_an_item_the_cart_does_not_hold() -> None:
    cart = cart_with(ItemAdded("cart-1", "a", 2, NOW))
    with pytest.raises(NotEnoughItems, match="holds no b"):
        cart.remove_item("b", None, NOW)


def test_removing_without_a_quantity_removes_all_of_that_item() -> None:
    cart = cart_with(ItemAdded("cart-1", "a", 7, NOW), ItemAdded("cart-1", "b", 1, NOW))
    [event] = cart.remove_item("a", None, NOW)
    assert event == ItemRemoved("cart-1", "a", 7, NOW)
    cart.apply(event)
    assert cart.items == {"b": 1}


def test_cannot_check_out_an_empty_cart() -> None:
    cart = cart_with(ItemAdded("cart-1", "a", 1, NOW), ItemRemoved("cart-1", "a", 1, NOW))
    with pytest.raises(EmptyCart):
        cart.checkout(NOW)


def test_a_checked_out_cart_accepts_no_further_change() -> None:
    cart = cart_with(ItemAdded("cart-1", "a", 1, NOW), CartCheckedOut("cart-1", NOW))
    assert cart.status == "checked_out"
    with pytest.raises(CartClosed):
        cart.add_item("a", 1, NOW)
    with pytest.raises(CartClosed):
        cart.remove_item("a", 1, NOW)
    with pytest.raises(CartClosed):
        cart.checkout(NOW)


def test_copy_is_independent() -> None:
    cart = cart_with(ItemAdded("cart-1", "a", 1, NOW))
    twin = cart.copy()
    twin.apply(ItemAdded("cart-1", "a", 1, NOW))
    assert (cart.items, cart.version) == ({"a": 1}, 1)
    assert (twin.items, twin.version) == ({"a": 2}, 2)
