"""The cart snapshot codec: the bytes it stores are a stored format (the `snapshots.state`
column), so they are pinned here byte for byte, and bytes written before the codec moved to
infrastructure still decode; bytes that are no cart state raise the application's error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from microservice_connector.cart_service.application.ports import CartState, UnreadableCartState
from microservice_connector.cart_service.infrastructure.snapshot_codec import JsonCartStateCodec

CODEC = JsonCartStateCodec()
STATE = CartState("checked_out", {"item-2": 2, "item-1": 10000, "a.b:c_d-e": 1})
# Written by `snapshot_of` at commit 50daad6, when cart_snapshots.py encoded with msgspec itself.
OLD_BYTES = b'{"status":"checked_out","items":{"item-2":2,"item-1":10000,"a.b:c_d-e":1}}'
OLD_EMPTY = b'{"status":"open","items":{}}'


def test_a_known_state_encodes_to_the_stored_format() -> None:
    assert CODEC.encode(STATE) == OLD_BYTES
    assert CODEC.encode(CartState("open", {})) == OLD_EMPTY


def test_bytes_written_by_the_old_code_decode_to_the_same_state() -> None:
    decoded = CODEC.decode(OLD_BYTES)
    assert decoded == STATE
    assert list(decoded.items) == ["item-2", "item-1", "a.b:c_d-e"]  # the cart's own order
    assert CODEC.decode(OLD_EMPTY) == CartState("open", {})


def test_fields_in_another_order_or_unknown_fields_still_decode() -> None:
    data = b'{"items":{"x":1},"note":"later field","status":"open"}'
    assert CODEC.decode(data) == CartState("open", {"x": 1})


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00 not a cart",
        b"[]",
        b'{"status":"open"}',  # no items
        b'{"status":"lost","items":{}}',  # no such status
        b'{"status":"open","items":{"x":"1"}}',  # a quantity that is no integer
    ],
)
def test_bytes_that_hold_no_cart_state_raise_unreadable_cart_state(data: bytes) -> None:
    with pytest.raises(UnreadableCartState):
        CODEC.decode(data)


item_ids = st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True)


@given(
    status=st.sampled_from(["open", "checked_out"]),
    items=st.dictionaries(item_ids, st.integers(1, 10_000), max_size=20),
)
def test_decode_undoes_encode(status: str, items: dict[str, int]) -> None:
    state = CartState(status, items)  # type: ignore[arg-type]
    assert CODEC.decode(CODEC.encode(state)) == state
