"""A cart message's ids follow the API's id rule: anything else is poison, named clearly."""

from __future__ import annotations

import pytest

from microservice_connector.billing_service.infrastructure.cart_messages import (
    PoisonMessage,
    to_cart_event,
)
from microservice_connector.events.registry import default_registry
from microservice_connector.messaging.message import Message

PAYLOAD = '{"cart_id":"%s","item_id":"item-001","quantity":1,"timestamp":"2026-11-25T00:00:00Z"}'


def _message(cart_id: str, event_id: str = "ev-1") -> Message:
    headers = {
        "event-id": event_id,
        "event-type": "ItemAdded",
        "aggregate-id": cart_id,
        "aggregate-version": "1",
    }
    return Message(event_id, "cart.events", (PAYLOAD % cart_id).encode(), headers)


def test_an_id_of_64_characters_is_accepted() -> None:
    cart_id = "c" * 64
    assert to_cart_event(_message(cart_id), default_registry()).cart_id == cart_id


@pytest.mark.parametrize(
    ("cart_id", "event_id", "named"),
    [
        ("c" * 65, "ev-1", "aggregate-id"),
        ("c" * 100_000, "ev-1", "aggregate-id"),
        ("cart 1", "ev-1", "aggregate-id"),
        ("cart/1", "ev-1", "aggregate-id"),
        ("cart-1", "ev\n1", "event-id"),
        ("cart-1", "e" * 65, "event-id"),
    ],
)
def test_a_malformed_or_oversized_id_is_poison_with_a_short_clear_error(
    cart_id: str, event_id: str, named: str
) -> None:
    with pytest.raises(PoisonMessage) as raised:
        to_cart_event(_message(cart_id, event_id), default_registry())
    assert f"header {named}" in str(raised.value)
    assert "is not an id (1-64 of A-Z a-z 0-9 . _ : -)" in str(raised.value)
    assert len(str(raised.value)) < 500


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("aggregate-version", "abc"),
        ("aggregate-version", "0_1"),
        ("aggregate-version", " 2"),
        ("aggregate-version", "+2"),
        ("aggregate-version", "9" * 30),
        ("schema-version", "abc"),
        ("schema-version", "1.0"),
    ],
)
def test_a_version_header_that_is_no_plain_number_is_poison_naming_it(
    header: str, value: str
) -> None:
    message = _message("cart-1")
    message.headers[header] = value
    with pytest.raises(PoisonMessage) as raised:
        to_cart_event(message, default_registry())
    assert f"header {header} {value!r} is no number" in str(raised.value)


def test_a_version_below_1_is_poison() -> None:
    message = _message("cart-1")
    message.headers["aggregate-version"] = "-3"
    with pytest.raises(PoisonMessage, match="aggregate-version must be ≥ 1, got -3"):
        to_cart_event(message, default_registry())


@pytest.mark.parametrize(
    ("value", "position"),
    [
        ("42", 42),
        (str(2**63 - 1), 2**63 - 1),
        ("0", None),
        ("-7", None),
        ("²", None),
        ("9" * 5000, None),
        ("", None),
    ],
)
def test_a_position_header_is_read_only_when_it_is_a_plain_positive_number(
    value: str, position: int | None
) -> None:
    from microservice_connector.billing_service.infrastructure.cart_event_handler import (
        feed_position,
    )
    from microservice_connector.messaging.message import Delivery

    message = _message("cart-1")
    message.headers["position"] = value

    async def settle(*_: object) -> None:
        return None

    assert feed_position(Delivery(message, 1, 1, settle, settle)) == position
