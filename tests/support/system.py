"""The event flow as real processes: a broker (nats-server, or Tansu for Kafka), the cart
service and billing.

With Kafka, Tansu sits behind a `TcpProxy`: Tansu keeps its data in memory only, so an
outage is the connection cut while Tansu runs on (data and group offsets intact), the way a
network partition from a durable Kafka cluster would look to the services."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from microservice_connector.billing_service.infrastructure.tables import DEFAULT_PRICES
from microservice_connector.messaging.message import Message
from microservice_connector.runtime.broker_link import BrokerLink, open_broker_link
from microservice_connector.settings import Settings
from support.nats import NatsServer
from support.processes import free_port, msc_service, run_msc, wait_for
from support.tansu import TansuServer, tansu_or_skip

BROKERS = ("nats", "kafka")
# Tansu delays a group join by about half the session timeout: short, so restarts are quick.
KAFKA_SESSION_TIMEOUT_MS = "1000"


@dataclass
class Flow:
    """Handles on the running parts, and ways to break them."""

    data_dir: Path
    broker: NatsServer | TansuServer
    cart_url: str
    billing_url: str
    billing_port: int
    stack: ExitStack
    billing: subprocess.Popen[bytes] | None = None
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=30))

    @property
    def kind(self) -> str:
        """`nats` or `kafka`."""
        return "kafka" if isinstance(self.broker, TansuServer) else "nats"

    def env(self) -> dict[str, str]:
        """The environment that points a service (or `msc`) at this flow's broker and cart
        service (billing heals from its store)."""
        if isinstance(self.broker, TansuServer):
            return {
                "MSC_CART_URL": self.cart_url,
                "MSC_BROKER": "kafka",
                "MSC_KAFKA_BOOTSTRAP": self.broker.bootstrap,
                "MSC_KAFKA_SESSION_TIMEOUT_MS": KAFKA_SESSION_TIMEOUT_MS,
                "MSC_KAFKA_PARTITIONS": "3",
            }
        return {
            "MSC_CART_URL": self.cart_url,
            "MSC_BROKER": "nats",
            "MSC_NATS_URL": self.broker.url,
        }

    def stop_broker(self) -> None:
        """Take the broker away: NATS stops; Kafka's connection is cut (Tansu runs on)."""
        if isinstance(self.broker, TansuServer):
            assert self.broker.proxy is not None
            self.broker.proxy.cut()
        else:
            self.broker.stop()

    def start_broker(self) -> None:
        """Bring the broker back, with what it held."""
        if isinstance(self.broker, TansuServer):
            assert self.broker.proxy is not None
            self.broker.proxy.restore()
        else:
            self.broker.start()

    def publish(self, messages: list[Message]) -> None:
        """Publish `messages` straight to the broker, as a foreign publisher would."""

        async def publish() -> None:
            link = self._link()
            try:
                await asyncio.wait_for(link.run(asyncio.Event()), 30)
                results = await (await link.publisher()).publish(messages)
                assert all(result.acknowledged for result in results), results
            finally:
                await link.close()

        asyncio.run(publish())

    def dead_letter_errors(self) -> list[str]:
        """The errors of the dead letters the broker holds, oldest first."""

        async def errors() -> list[str]:
            link = self._link()
            try:
                await asyncio.wait_for(link.run(asyncio.Event()), 30)
                return [letter.error for letter in await (await link.dead_letters()).list()]
            finally:
                await link.close()

        return asyncio.run(errors())

    def msc(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run `msc ARGS` against this flow's broker."""
        return run_msc(*args, env=self.env())

    def billing_count(self, outcome: str) -> float:
        """Billing's `msc_billing_events_total{outcome=...}` since its process started."""
        text = self.http.get(f"{self.billing_url}/metrics").text
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "msc_billing_events_total" and sample.labels["outcome"] == outcome
        )

    def _link(self) -> BrokerLink:
        return open_broker_link(Settings(**_settings_of(self.env())), name="e2e-test")

    def start_billing(self) -> None:
        """Start (or restart) the billing service and wait until it answers."""
        env = self.env()
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

    def stop_billing(self) -> None:
        """SIGTERM the billing process: it finishes its batch, commits and leaves."""
        assert self.billing is not None
        self.billing.send_signal(signal.SIGTERM)
        self.billing.wait(timeout=30)

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
    """The bill a correct billing keeps for `cart`, priced from the default price list (each
    price at its first version)."""
    lines = {}
    for item, quantity in cart["items"].items():
        price = DEFAULT_PRICES.get(item)
        lines[item] = {
            "quantity": quantity,
            "unit_price_cents": price or 0,
            "amount_cents": quantity * (price or 0),
            "unpriced": price is None,
            "price_version": None if price is None else 1,
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


def _settings_of(env: dict[str, str]) -> dict[str, Any]:
    return {name.removeprefix("MSC_").lower(): value for name, value in env.items()}


@contextmanager
def running_flow(data_dir: Path, broker: str = "nats") -> Iterator[Flow]:
    """The broker (`nats`, or `kafka`: Tansu behind a proxy), the cart service (with relay)
    and billing, each a real process. Skips where there is no Tansu build for Kafka."""
    if broker == "kafka":
        tansu_or_skip()
    with ExitStack() as stack:
        server: NatsServer | TansuServer = stack.enter_context(
            TansuServer(data_dir / "tansu", behind_proxy=True)
            if broker == "kafka"
            else NatsServer(data_dir / "nats")
        )
        cart_port, billing_port = free_port(), free_port()
        flow = Flow(
            data_dir,
            server,
            f"http://127.0.0.1:{cart_port}",
            f"http://127.0.0.1:{billing_port}",
            billing_port,
            stack,
        )
        args = ["cart-service", "--port", str(cart_port), "--data-dir", str(data_dir)]
        stack.enter_context(
            msc_service(
                args,
                health_url=f"http://127.0.0.1:{cart_port}/healthz",
                log=data_dir / "cart.log",
                env=flow.env(),
            )
        )
        flow.start_billing()
        yield flow
