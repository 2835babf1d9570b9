"""The event flow as real processes: a nats-server, the cart service and billing."""

from __future__ import annotations

import random
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from microservice_connector.billing_service.infrastructure.tables import DEFAULT_PRICES
from support.nats import NatsServer
from support.processes import free_port, msc_service, wait_for


@dataclass
class Flow:
    """Handles on the running parts, and ways to break them."""

    data_dir: Path
    nats: NatsServer
    cart_url: str
    billing_url: str
    billing_port: int
    stack: ExitStack
    billing: subprocess.Popen[bytes] | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    def start_billing(self) -> None:
        """Start (or restart) the billing service and wait until it answers."""
        env = {"MSC_NATS_URL": self.nats.url}
        args = [
            "billing-service",
            "--port",
            str(self.billing_port),
            "--data-dir",
            str(self.data_dir),
        ]
        context = msc_service(
            args,
            health_url=f"{self.billing_url}/healthz",
            log=self.data_dir / "billing.log",
            env=env,
        )
        self.billing = self.stack.enter_context(context)

    def kill_billing(self) -> None:
        """SIGKILL the billing process: no chance to ack, flush or commit."""
        assert self.billing is not None
        self.billing.send_signal(signal.SIGKILL)
        self.billing.wait()

    def bill(self, cart_id: str) -> dict[str, Any] | None:
        """Billing's bill of the cart, or None before its first event."""
        response = self.http.get(f"{self.billing_url}/billing/carts/{cart_id}")
        return response.json() if response.status_code == 200 else None

    def cart(self, cart_id: str) -> dict[str, Any]:
        """The cart as the cart service has it."""
        response = self.http.get(f"{self.cart_url}/carts/{cart_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_until_billed(self, cart_ids: list[str], timeout: float = 60) -> None:
        """Poll until billing has applied every cart's latest version."""
        versions = {cart: self.cart(cart)["version"] for cart in cart_ids}

        def caught_up() -> bool:
            return all((self.bill(c) or {}).get("last_version") == v for c, v in versions.items())

        wait_for(caught_up, timeout, "billing to apply every cart's events")

    def assert_bills_match_carts(self, cart_ids: list[str]) -> None:
        """Each bill equals the one computed from the cart's items and the price list."""
        for cart_id in cart_ids:
            assert self.bill(cart_id) == expected_bill(self.cart(cart_id)), cart_id
            if self.cart(cart_id)["status"] == "checked_out":
                invoice = self.http.get(f"{self.billing_url}/invoices/{cart_id}").json()
                bill = expected_bill(self.cart(cart_id))
                assert (invoice["lines"], invoice["total_cents"]) == (
                    bill["lines"],
                    bill["total_cents"],
                )


def expected_bill(cart: dict[str, Any]) -> dict[str, Any]:
    """The bill a correct billing keeps for `cart`, priced from the default price list."""
    lines = {}
    for item, quantity in cart["items"].items():
        price = DEFAULT_PRICES.get(item)
        lines[item] = {
            "quantity": quantity,
            "unit_price_cents": price or 0,
            "amount_cents": quantity * (price or 0),
            "unpriced": price is None,
        }
    return {
        "cart_id": cart["cart_id"],
        "last_version": cart["version"],
        "checked_out": cart["status"] == "checked_out",
        "lines": lines,
        "total_cents": sum(line["amount_cents"] for line in lines.values()),
    }


ITEMS = [*DEFAULT_PRICES, "item-unpriced"]


def shop(http: httpx.Client, cart_url: str, cart_ids: list[str], commands: int, seed: int) -> int:
    """Random adds and removes, then a checkout of every other cart; returns 200s sent."""
    rng = random.Random(seed)
    ok = 0
    for _ in range(commands):
        cart_id, item = rng.choice(cart_ids), rng.choice(ITEMS)
        if rng.random() < 0.8:
            response = http.post(
                f"{cart_url}/carts/{cart_id}/items",
                json={"item_id": item, "quantity": rng.randint(1, 5)},
            )
        else:
            response = http.delete(
                f"{cart_url}/carts/{cart_id}/items/{item}", params={"quantity": 1}
            )
        assert response.status_code in (200, 404, 409), response.text
        ok += response.status_code == 200
    for cart_id in cart_ids[::2]:
        response = http.post(f"{cart_url}/carts/{cart_id}/checkout")
        assert response.status_code in (200, 404, 409), response.text
    return ok


@contextmanager
def running_flow(data_dir: Path) -> Iterator[Flow]:
    """nats-server, cart service (with relay) and billing, each a real process."""
    with ExitStack() as stack:
        nats = stack.enter_context(NatsServer(data_dir / "nats"))
        cart_port, billing_port = free_port(), free_port()
        env = {"MSC_NATS_URL": nats.url}
        args = ["cart-service", "--port", str(cart_port), "--data-dir", str(data_dir)]
        stack.enter_context(
            msc_service(
                args,
                health_url=f"http://127.0.0.1:{cart_port}/healthz",
                log=data_dir / "cart.log",
                env=env,
            )
        )
        flow = Flow(
            data_dir,
            nats,
            f"http://127.0.0.1:{cart_port}",
            f"http://127.0.0.1:{billing_port}",
            billing_port,
            stack,
        )
        flow.start_billing()
        yield flow
