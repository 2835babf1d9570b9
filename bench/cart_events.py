"""Cart events for the consumption benches, and the check that billing billed them all.

`cart_events` makes `ItemAdded` events spread round-robin over fresh carts, recorded as the
event store records them; `check_bills` reopens billing's database and compares every
cart's bill with what was published.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from microservice_connector.billing_service.main import open_billing_repository
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.codec import JSON_CONTENT_TYPE, encode_json
from microservice_connector.events.envelope import RecordedEvent
from microservice_connector.settings import Settings

ITEMS = ("item-001", "item-002", "item-003", "item-004", "item-005")


def cart_events(
    events: int, carts: int, *, correlated: bool = True
) -> tuple[list[RecordedEvent], dict[str, list[int]]]:
    """`events` recorded `ItemAdded` events over `carts` new carts, and each cart's
    quantities in version order; `correlated` gives each a correlation (= causation) id."""
    cart_ids = [f"cart-{uuid.uuid4().hex[:12]}" for _ in range(carts)]
    quantities: dict[str, list[int]] = {cart: [] for cart in cart_ids}
    recorded: list[RecordedEvent] = []
    for k in range(events):
        cart = cart_ids[k % carts]
        quantity = 1 + k % 3
        quantities[cart].append(quantity)
        now = datetime.now(UTC)
        correlation = str(uuid.uuid4()) if correlated else None
        recorded.append(
            RecordedEvent(
                position=k + 1,
                event_id=str(uuid.uuid4()),
                aggregate_id=cart,
                aggregate_type="ShoppingCart",
                version=len(quantities[cart]),
                event_type="ItemAdded",
                schema_version=1,
                content_type=JSON_CONTENT_TYPE,
                event_data=encode_json(ItemAdded(cart, ITEMS[k % len(ITEMS)], quantity, now)),
                timestamp=now,
                correlation_id=correlation,
                causation_id=correlation,
            )
        )
    return recorded, quantities


def check_bills(settings: Settings, quantities: dict[str, list[int]]) -> list[str]:
    """Up to 10 problems: a cart with no bill, or billed at another version or quantity than
    published, or totals that differ; reopened cold. Prints the totals."""
    repository = open_billing_repository(settings)
    problems: list[str] = []
    billed = expected = 0
    try:
        for cart, published in quantities.items():
            bill = repository.bill(cart)
            if bill is None:
                problems.append(f"cart {cart}: no bill")
                continue
            quantity = sum(line.quantity for line in bill.lines.values())
            if bill.last_version != len(published):
                problems.append(f"cart {cart}: bill at {bill.last_version}, not {len(published)}")
            elif quantity != sum(published):
                problems.append(f"cart {cart}: quantity {quantity}, published {sum(published)}")
            billed += quantity
            expected += sum(published)
    finally:
        repository.close()
    if billed != expected:
        problems.append(f"bills hold quantity {billed}, published {expected}")
    print(f"bills: {len(quantities)} carts, total quantity {billed} (published {expected})")
    return problems[:10]
