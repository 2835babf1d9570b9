"""`msc demo --chaos`: the broker loses what it acknowledged, and billing heals from the
event store. Billing is frozen, commands go through, every process is killed and the
broker's data thrown away; after the restart the bills are timed until they match."""

from __future__ import annotations

import shutil
import signal
import time
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.table import Table

from microservice_connector.cli.common import console, fail
from microservice_connector.cli.demo_scenario import money
from microservice_connector.runtime.system import Part, System

CARTS = 6
RELAY_WAIT_S = 30.0
HEAL_WAIT_S = 60.0


def run_chaos(system: System, carts: int = CARTS) -> None:
    """Freeze billing, send commands, kill everything, lose the broker's data, restart; print
    how long the bills took to heal and that each matches its cart."""
    cart_url = f"http://{system.host}:{system.cart_port}"
    billing_url = f"http://{system.host}:{system.billing_port}"
    cart_ids = [f"chaos-{n}" for n in range(1, carts + 1)]
    with httpx.Client(timeout=10) as http:
        console.print("\n[bold]chaos[/]: billing frozen (SIGSTOP) …")
        _part(system, "billing-service").process.send_signal(signal.SIGSTOP)
        for n, cart_id in enumerate(cart_ids):
            _command(http, "POST", f"{cart_url}/carts/{cart_id}/items", "item-001", n + 1)
            _command(http, "POST", f"{cart_url}/carts/{cart_id}/items", "item-003", 1)
            if n % 2:
                _command(http, "POST", f"{cart_url}/carts/{cart_id}/checkout")
        _wait_for_relay(http, cart_url)
        console.print(
            f"[green]✓[/] {carts} carts changed; the relay published every event and the "
            "broker acknowledged it; billing saw none of it"
        )
        _kill_everything_and_lose_the_broker(system)
        started = time.monotonic()
        system.start()
        answering = time.monotonic()
        console.print(f"restarted in {answering - started:.1f} s; waiting for the bills …")
        healed_at = _wait_until_healed(http, cart_url, billing_url, cart_ids)
        rows = [_row(http, cart_url, billing_url, cart_id) for cart_id in cart_ids]
    console.print(_table(rows))
    console.print(
        f"[bold green]healed[/]: every bill matches its cart {healed_at - answering:.1f} s "
        f"after the services answered again ({healed_at - started:.1f} s after the restart), "
        "applied from the event store: the broker had lost the events"
    )


def _part(system: System, name: str) -> Part:
    found = next((part for part in system.parts if part.name == name), None)
    if found is None:
        fail(f"no {name} running")
    return found


def _command(
    http: httpx.Client, method: str, url: str, item: str | None = None, quantity: int = 1
) -> None:
    body = {"item_id": item, "quantity": quantity} if item else None
    response = http.request(method, url, json=body)
    if response.status_code != 200:
        fail(f"{method} {url}: {response.status_code} {response.text[:200]}")


def _wait_for_relay(http: httpx.Client, cart_url: str) -> None:
    """Until the outbox has nothing left to publish."""
    deadline = time.monotonic() + RELAY_WAIT_S
    while time.monotonic() < deadline:
        text = http.get(f"{cart_url}/metrics").text
        pending = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "msc_outbox_pending_rows"
        )
        if pending == 0:
            return
        time.sleep(0.1)
    fail(f"the relay did not publish everything within {RELAY_WAIT_S:.0f} s")


def _kill_everything_and_lose_the_broker(system: System) -> None:
    """SIGKILL every part; forget the embedded broker's data, so it restarts empty."""
    names = [part.name for part in system.parts]
    for part in system.parts:
        part.process.kill()
        part.process.wait()
    system.parts.clear()
    if "nats-server" in names:
        shutil.rmtree(system.data_dir / "nats", ignore_errors=True)
        system.nats_url = None
    if "tansu" in names:  # memory-only: a new one is empty
        system.kafka_bootstrap = None
    console.print(
        f"[red]✗[/] every process SIGKILLed; the broker's data thrown away ({', '.join(names)})"
    )


def _wait_until_healed(
    http: httpx.Client, cart_url: str, billing_url: str, cart_ids: list[str]
) -> float:
    """The moment every bill (and invoice) matched its cart."""
    deadline = time.monotonic() + HEAL_WAIT_S
    while time.monotonic() < deadline:
        if all(_row(http, cart_url, billing_url, c)["matches"] for c in cart_ids):
            return time.monotonic()
        time.sleep(0.1)
    fail(f"the bills did not heal within {HEAL_WAIT_S:.0f} s")


def _row(http: httpx.Client, cart_url: str, billing_url: str, cart_id: str) -> dict[str, Any]:
    cart = http.get(f"{cart_url}/carts/{cart_id}").json()
    bill_answer = http.get(f"{billing_url}/billing/carts/{cart_id}")
    bill = bill_answer.json() if bill_answer.status_code == 200 else {}
    invoice_answer = http.get(f"{billing_url}/invoices/{cart_id}")
    invoice = invoice_answer.json() if invoice_answer.status_code == 200 else None
    billed = {item: line["quantity"] for item, line in bill.get("lines", {}).items()}
    matches = bill.get("last_version") == cart["version"] and billed == cart["items"]
    if cart["status"] == "checked_out":
        matches = matches and invoice is not None
    return {
        "cart": cart,
        "bill": bill,
        "invoice": invoice,
        "matches": matches,
    }


def _table(rows: list[dict[str, Any]]) -> Table:
    table = Table(title="after the broker lost everything: carts and their bills")
    for column in ("cart", "version", "status", "bill version", "bill total", "invoice", "match"):
        table.add_column(column)
    for row in rows:
        cart, bill, invoice = row["cart"], row["bill"], row["invoice"]
        table.add_row(
            cart["cart_id"],
            str(cart["version"]),
            cart["status"],
            str(bill.get("last_version", "-")),
            money(bill.get("total_cents", 0)),
            invoice["invoice_id"] if invoice else "-",
            "[green]✓[/]" if row["matches"] else "[red]✗[/]",
        )
    return table
