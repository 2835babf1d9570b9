"""The original design's scenario, over HTTP, printed for a learner."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.table import Table

from microservice_connector.cli.common import console, fail
from microservice_connector.runtime.system import System

INVOICE_WAIT_S = 30.0


def run_scenario(system: System, cart_id: str) -> None:
    """Add, remove, check out; then show the cart, its events and billing's invoice."""
    cart_url = f"http://{system.host}:{system.cart_port}"
    billing_url = f"http://{system.host}:{system.billing_port}"
    with httpx.Client(timeout=10) as http:
        steps = [
            (
                "AddItem(cart-123, item-001, 2)",
                "POST",
                f"/carts/{cart_id}/items",
                {"item_id": "item-001", "quantity": 2},
            ),
            (
                "AddItem(cart-123, item-002, 3)",
                "POST",
                f"/carts/{cart_id}/items",
                {"item_id": "item-002", "quantity": 3},
            ),
            (
                "RemoveItem(cart-123, item-002, 1)",
                "DELETE",
                f"/carts/{cart_id}/items/item-002?quantity=1",
                None,
            ),
            ("Checkout(cart-123)", "POST", f"/carts/{cart_id}/checkout", None),
        ]
        for label, method, path, body in steps:
            label = label.replace("cart-123", cart_id)
            response = http.request(method, cart_url + path, json=body)
            answer = response.json()
            if response.status_code != 200:
                fail(f"{label}: {response.status_code} {answer.get('detail')}")
            console.print(f"[green]✓[/] {label} → version {answer['version']}")
        cart = http.get(f"{cart_url}/carts/{cart_id}").json()
        events = http.get(f"{cart_url}/carts/{cart_id}/events").json()["events"]
        invoice = _wait_for_invoice(http, f"{billing_url}/invoices/{cart_id}")
    _print_cart(cart)
    _print_events(events)
    _print_invoice(invoice)


def _wait_for_invoice(http: httpx.Client, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + INVOICE_WAIT_S
    while time.monotonic() < deadline:
        response = http.get(url)
        if response.status_code == 200:
            invoice: dict[str, Any] = response.json()
            return invoice
        time.sleep(0.1)
    fail(f"no invoice within {INVOICE_WAIT_S:.0f} s at {url}")


def _print_cart(cart: dict[str, Any]) -> None:
    table = Table(title=f"cart {cart['cart_id']} · version {cart['version']} · {cart['status']}")
    table.add_column("item")
    table.add_column("quantity", justify="right")
    for item, quantity in cart["items"].items():
        table.add_row(item, str(quantity))
    console.print(table)


def _print_events(events: list[dict[str, Any]]) -> None:
    table = Table(title="its events, as stored")
    for column in ("position", "version", "type", "data"):
        table.add_column(column)
    for event in events:
        data = {k: v for k, v in event["data"].items() if k != "timestamp"}
        table.add_row(str(event["position"]), str(event["version"]), event["event_type"], str(data))
    console.print(table)


def _print_invoice(invoice: dict[str, Any]) -> None:
    table = Table(title=f"invoice {invoice['invoice_id']} (from billing, via NATS)")
    for column in ("item", "quantity", "unit price", "amount"):
        table.add_column(column, justify="right")
    for item, line in invoice["lines"].items():
        price = "unpriced" if line["unpriced"] else money(line["unit_price_cents"])
        table.add_row(item, str(line["quantity"]), price, money(line["amount_cents"]))
    table.add_row("total", "", "", f"[bold]{money(invoice['total_cents'])}[/]")
    console.print(table)


def money(cents: int) -> str:
    """Cents as `units.cents`."""
    return f"{cents // 100}.{cents % 100:02d}"
