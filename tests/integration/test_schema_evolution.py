"""Schema evolution: `ItemAdded` v1 events are stored, v2 (with a `unit`) is introduced with
an upcaster, and old and new events load into one cart correctly — in the cart service on a
real SQLite store, and in billing consuming them from a real nats-server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
import pytest
from fastapi.testclient import TestClient

from microservice_connector.billing_service.infrastructure.tables import DEFAULT_PRICES as PRICES
from microservice_connector.billing_service.main import build_billing_app
from microservice_connector.cart_service.application import CartService
from microservice_connector.events import CartCheckedOut, ItemAdded, NewEvent
from microservice_connector.events.codecs import codec_named
from microservice_connector.eventstore import AppendRequest, GroupCommitStore, SqlEventStore
from microservice_connector.messaging.message import Message
from microservice_connector.messaging.nats.connection import ensure_stream
from microservice_connector.messaging.nats.publisher import NatsPublisher
from microservice_connector.settings import Settings
from support.evolution import ItemAddedV2, as_message, recorded, v2_registry
from support.nats import NatsServer
from support.processes import wait_for

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


async def _cart_story(url: str) -> None:
    # Before the change: the service writes v1 events, some in JSON, some in Protobuf.
    for serializer in ("json", "protobuf"):
        old = GroupCommitStore(SqlEventStore(url, codec=codec_named(serializer)))
        await CartService(old).add_item("cart-1", f"item-{serializer}", 2)
        old.close()
    # After it: a newer writer appends v2 events, which carry a unit.
    store = SqlEventStore(url)
    v2 = NewEvent("ItemAdded", ItemAddedV2("cart-1", "flour", 3, NOW, unit="kg"), NOW, 2)
    store.append(AppendRequest("cart-1", "ShoppingCart", 2, [v2]))
    store.close()

    new = GroupCommitStore(SqlEventStore(url))
    try:
        registry = v2_registry()
        service = CartService(new, registry=registry)
        cart = await service.get_cart("cart-1")
        assert (cart.version, cart.items) == (3, {"item-json": 2, "item-protobuf": 2, "flour": 3})
        decoded = [registry.decode(e) for e in await service.cart_events("cart-1")]
        assert [type(e) for e in decoded] == [ItemAddedV2] * 3
        assert [e.unit for e in decoded] == ["piece", "piece", "kg"]  # type: ignore[attr-defined]
        assert [e.schema_version for e in await service.cart_events("cart-1")] == [1, 1, 2]
        # Commands carry on over the mixed history.
        after = await service.remove_item("cart-1", "item-json", 1)
        assert after.items == {"item-json": 1, "item-protobuf": 2, "flour": 3}
    finally:
        new.close()


def test_old_and_new_events_load_into_one_cart_in_the_cart_service(tmp_path: Path) -> None:
    asyncio.run(_cart_story(f"sqlite:///{tmp_path / 'events.db'}"))


async def _publish(url: str, messages: Sequence[Message]) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        await ensure_stream(js, "CART", ["cart.events"])
        results = await NatsPublisher(js).publish(messages)
        assert all(result.acknowledged for result in results), results
    finally:
        await client.close()


@pytest.mark.nats
def test_old_and_new_events_load_into_one_cart_in_billing(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    settings = Settings(data_dir=tmp_path, nats_url=nats_server.url)
    events = [
        recorded(ItemAdded("cart-9", "item-001", 2, NOW), 1),
        recorded(ItemAdded("cart-9", "item-002", 1, NOW), 2, serializer="protobuf"),
        recorded(ItemAddedV2("cart-9", "item-001", 3, NOW, unit="box"), 3, schema_version=2),
        recorded(CartCheckedOut("cart-9", NOW), 4, serializer="protobuf"),
    ]
    with TestClient(build_billing_app(settings, events=v2_registry())) as billing:
        wait_for(lambda: billing.get("/readyz").status_code == 200, 30, "billing to be ready")
        asyncio.run(_publish(nats_server.url, [as_message(e) for e in events]))

        def bill() -> dict[str, Any]:
            response = billing.get("/billing/carts/cart-9")
            return response.json() if response.status_code == 200 else {}

        wait_for(lambda: bill().get("last_version") == 4, 30, "billing to apply all 4 events")
        assert {item: line["quantity"] for item, line in bill()["lines"].items()} == {
            "item-001": 5,
            "item-002": 1,
        }
        assert bill()["total_cents"] == 5 * PRICES["item-001"] + PRICES["item-002"]
        assert billing.get("/invoices/cart-9").json()["total_cents"] == bill()["total_cents"]
