"""A bounded cache of carts; the store's version guard keeps it honest."""

from __future__ import annotations

from collections import OrderedDict

from microservice_connector.cart_service.domain import ShoppingCart


class CartCache:
    """Least-recently-used carts. A stale entry only costs one failed append and a reload."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._carts: OrderedDict[str, ShoppingCart] = OrderedDict()

    def get(self, cart_id: str) -> ShoppingCart | None:
        """The cached cart, marked as recently used, or None."""
        cart = self._carts.get(cart_id)
        if cart is not None:
            self._carts.move_to_end(cart_id)
        return cart

    def put(self, cart: ShoppingCart) -> None:
        """Remember `cart` unless a newer version is cached; evict the least recently used."""
        if self._capacity <= 0:
            return
        cached = self._carts.get(cart.cart_id)
        if cached is not None and cached.version > cart.version:
            return
        self._carts[cart.cart_id] = cart
        self._carts.move_to_end(cart.cart_id)
        while len(self._carts) > self._capacity:
            self._carts.popitem(last=False)

    def evict(self, cart_id: str) -> None:
        """Forget `cart_id`."""
        self._carts.pop(cart_id, None)
