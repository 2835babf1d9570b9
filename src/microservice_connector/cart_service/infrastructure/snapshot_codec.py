"""The stored form of a cart snapshot's state: compact JSON, `{"status":…,"items":{…}}`."""

from __future__ import annotations

import msgspec

from microservice_connector.cart_service.application.ports import CartState, UnreadableCartState
from microservice_connector.cart_service.domain.shopping_cart import CartStatus


class _StoredCartState(msgspec.Struct, frozen=True):
    # The stored format: its fields, their order and names are what `snapshots.state` holds.
    # Changing them needs a new SNAPSHOT_SCHEMA_VERSION (see cart_snapshots).
    status: CartStatus
    items: dict[str, int]


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(_StoredCartState).decode


class JsonCartStateCodec:
    """`CartStateCodec` as msgspec JSON: status first, then items in the cart's order; reads
    fields in any order and ignores unknown ones."""

    def encode(self, state: CartState) -> bytes:
        """The state as compact JSON bytes."""
        return _encode(_StoredCartState(state.status, state.items))

    def decode(self, data: bytes) -> CartState:
        """The state `data` holds; raises `UnreadableCartState` if it is not one."""
        try:
            stored = _decode(data)
        except msgspec.DecodeError as exc:  # also a ValidationError: the wrong shape
            raise UnreadableCartState(f"not a cart state: {exc}") from exc
        return CartState(stored.status, stored.items)
