"""Events flow from the cart through the outbox and the broker to billing, exactly once in
effect, whatever breaks on the way. Every part is a real process, and every story is told
twice: on NATS JetStream, and on Kafka (a real Tansu)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import msgspec
import pytest

from microservice_connector.events.cart import CartCheckedOut, ItemAdded, ItemRemoved
from microservice_connector.messaging.message import Message
from support.processes import run_msc, wait_for
from support.system import Flow, running_flow, shop

pytestmark = [pytest.mark.e2e]


@pytest.fixture(
    params=[
        pytest.param("nats", marks=pytest.mark.nats),
        pytest.param("kafka", marks=pytest.mark.kafka),
    ]
)
def flow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flow]:
    with running_flow(tmp_path, request.param) as flow:
        yield flow


def test_bills_and_invoices_equal_the_price_list_over_many_carts(flow: Flow) -> None:
    carts = [f"cart-{n}" for n in range(20)]
    assert shop(flow.http, flow.cart_url, carts, commands=200, seed=1) > 100
    flow.wait_until_billed(carts)
    flow.assert_bills_match_carts(carts)
    invoices = [flow.http.get(f"{flow.billing_url}/invoices/{c}").status_code for c in carts]
    assert invoices.count(200) >= 5  # every other cart was checked out (if it held items)

    # Rebuild: drop billing's read model, replay the cart feed, reach the same bills.
    before = {cart: flow.bill(cart) for cart in carts}
    rebuilt = run_msc(
        "billing", "rebuild", "--data-dir", str(flow.data_dir), "--cart-url", flow.cart_url
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "rebuilt billing from" in rebuilt.stdout
    assert {cart: flow.bill(cart) for cart in carts} == before


async def _add_concurrently(cart_url: str, carts: list[str], count: int) -> list[int]:
    async with httpx.AsyncClient(timeout=30) as client:
        limit = asyncio.Semaphore(32)

        async def add(n: int) -> int:
            async with limit:
                body = {"item_id": "item-001", "quantity": 1}
                response = await client.post(
                    f"{cart_url}/carts/{carts[n % len(carts)]}/items", json=body
                )
                return response.status_code

        return await asyncio.gather(*(add(n) for n in range(count)))


def test_commands_succeed_while_the_broker_is_down_and_billing_catches_up(flow: Flow) -> None:
    carts = [f"outage-{n}" for n in range(25)]
    flow.stop_broker()
    statuses = asyncio.run(_add_concurrently(flow.cart_url, carts, 500))
    assert statuses == [200] * 500
    ready = flow.http.get(f"{flow.cart_url}/readyz")
    assert ready.status_code == 503
    assert "broker" in ready.json()["detail"]
    status = run_msc("outbox", "status", "--data-dir", str(flow.data_dir))
    assert "pending:   500" in status.stdout, status.stdout

    flow.start_broker()
    flow.wait_until_billed(carts, timeout=90)
    flow.assert_bills_match_carts(carts)
    assert all(flow.bill(cart)["lines"]["item-001"]["quantity"] == 20 for cart in carts)  # type: ignore[index]
    wait_for(
        lambda: (
            "pending:   0" in run_msc("outbox", "status", "--data-dir", str(flow.data_dir)).stdout
        ),
        30,
        "the outbox to drain",
    )


def test_billing_killed_mid_stream_applies_nothing_twice_and_misses_nothing(flow: Flow) -> None:
    carts = [f"crash-{n}" for n in range(30)]
    sender = threading.Thread(
        target=shop, args=(httpx.Client(timeout=30), flow.cart_url, carts, 600, 7)
    )
    sender.start()
    wait_for(
        lambda: sum(flow.bill(c) is not None for c in carts) >= 5, 60, "billing to start applying"
    )
    flow.kill_billing()
    sender.join(timeout=120)
    assert not sender.is_alive()
    flow.start_billing()
    flow.wait_until_billed(carts, timeout=90)
    flow.assert_bills_match_carts(carts)


def _event_message(event: msgspec.Struct, version: int, *, event_id: str | None = None) -> Message:
    event_id = event_id or str(uuid.uuid4())
    cart_id = event.cart_id  # type: ignore[attr-defined]
    return Message(
        id=event_id,
        topic="cart.events",
        payload=msgspec.json.encode(event),
        key=cart_id,
        headers={
            "event-id": event_id,
            "event-type": type(event).__name__,
            "aggregate-id": cart_id,
            "aggregate-type": "ShoppingCart",
            "aggregate-version": str(version),
            "content-type": "application/json",
            "schema-version": "1",
        },
    )


def test_duplicates_are_applied_once_and_reordered_events_bill_right(flow: Flow) -> None:
    now = datetime.now(UTC)
    # A duplicate of a real event, under a new message id so the broker cannot drop it.
    flow.http.post(f"{flow.cart_url}/carts/dup/items", json={"item_id": "item-001", "quantity": 3})
    flow.wait_until_billed(["dup"])
    again = _event_message(ItemAdded("dup", "item-001", 3, now), 1)
    # Out of order: versions 3, 1, 2 of a cart only the broker knows.
    v1 = _event_message(ItemAdded("shuffled", "item-002", 4, now), 1)
    v2 = _event_message(ItemRemoved("shuffled", "item-002", 1, now), 2)
    v3 = _event_message(CartCheckedOut("shuffled", now), 3)
    flow.publish([again, v3, v1, v2])
    wait_for(
        lambda: (flow.bill("shuffled") or {}).get("last_version") == 3, 30, "the shuffled cart"
    )

    assert flow.bill("dup")["lines"]["item-001"]["quantity"] == 3  # type: ignore[index]
    shuffled = flow.bill("shuffled")
    assert shuffled is not None
    assert shuffled["lines"] == {
        "item-002": {
            "quantity": 3,
            "unit_price_cents": 550,
            "amount_cents": 1650,
            "unpriced": False,
            "price_version": 1,
        }
    }
    assert shuffled["checked_out"] is True
    invoice = flow.http.get(f"{flow.billing_url}/invoices/shuffled").json()
    assert invoice["total_cents"] == 1650


def test_poison_messages_are_dead_lettered_and_the_consumer_carries_on(flow: Flow) -> None:
    now = datetime.now(UTC)
    good = _event_message(ItemAdded("after-poison", "item-001", 1, now), 1)
    garbage = Message(
        id=str(uuid.uuid4()),
        topic="cart.events",
        payload=b"\x00\xffnot json",
        headers={**good.headers, "event-id": "garbage", "aggregate-id": "p1"},
    )
    unknown = Message(
        id=str(uuid.uuid4()),
        topic="cart.events",
        payload=b"{}",
        headers={
            **good.headers,
            "event-id": "unknown",
            "event-type": "CartExploded",
            "aggregate-id": "p2",
        },
    )
    headless = Message(id=str(uuid.uuid4()), topic="cart.events", payload=good.payload, headers={})
    flow.publish([garbage, unknown, headless, good])
    wait_for(lambda: flow.bill("after-poison") is not None, 30, "the good event after the poison")

    wait_for(lambda: len(flow.dead_letter_errors()) == 3, 30, "three dead letters")
    errors = " | ".join(flow.dead_letter_errors())
    assert "malformed" in errors
    assert "unknown event type 'CartExploded'" in errors
    assert "missing headers" in errors

    listed = flow.msc("deadletter", "list")
    assert listed.returncode == 0, listed.stderr
    assert "CartExploded" in listed.stdout
    replayed = flow.msc("deadletter", "replay", "--all")
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.count("replayed") == 3
    # Still poison: each comes back to the dead-letter stream, and nothing else broke.
    wait_for(lambda: len(flow.dead_letter_errors()) == 3, 30, "the replayed poison to return")
    assert flow.bill("after-poison")["last_version"] == 1  # type: ignore[index]


def test_a_billing_restart_resumes_after_the_committed_offset(flow: Flow) -> None:
    """Stopped cleanly, billing commits (Kafka) or acks (NATS) what it applied; started again
    it takes up exactly after it: nothing applied twice, nothing skipped."""
    carts = [f"resume-{n}" for n in range(10)]
    shop(flow.http, flow.cart_url, carts, commands=150, seed=11)
    flow.wait_until_billed(carts)
    flow.stop_billing()
    before = {cart: flow.cart(cart)["version"] for cart in carts}

    sent = shop(flow.http, flow.cart_url, carts, commands=150, seed=12)
    events = sum(flow.cart(cart)["version"] - before[cart] for cart in carts)
    flow.start_billing()
    flow.wait_until_billed(carts)

    flow.assert_bills_match_carts(carts)
    assert sent > 0
    assert flow.billing_count("applied") == events  # each event after the stop, once
    assert flow.billing_count("duplicate") == 0  # none from before it came again
