"""The embedded broker (nats-server, or Tansu) loses its data after acknowledging events
billing never got: the cart service's relay publishes them again, billing's consumer is made
again, and every bill comes right without restarting either service."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from microservice_connector.runtime.system import Part, System, wait_until
from support.processes import free_port
from support.tansu import tansu_or_skip

pytestmark = pytest.mark.e2e

CARTS = [f"loss-{n}" for n in range(5)]
DEADLINE_S = 30.0


def part_named(system: System, name: str) -> Part:
    return next(part for part in system.parts if part.name == name)


def add_item(cart_url: str, cart: str) -> None:
    answer = httpx.post(
        f"{cart_url}/carts/{cart}/items", json={"item_id": "item-001", "quantity": 1}, timeout=10
    )
    assert answer.status_code == 200, answer.text


def billed_version(billing_url: str, cart: str) -> int:
    answer = httpx.get(f"{billing_url}/billing/carts/{cart}", timeout=5)
    return int(answer.json()["last_version"]) if answer.status_code == 200 else 0


def counter(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith((name + "{", name + " "))
    )


def restart_without_data(system: System) -> None:
    """SIGKILL the broker, throw its store away (Tansu keeps none), start it again as it was."""
    broker = part_named(system, "tansu" if system.broker == "kafka" else "nats-server")
    broker.process.kill()
    broker.process.wait()
    shutil.rmtree(system.data_dir / "nats", ignore_errors=True)
    with broker.log.open("ab") as out:
        broker.process = subprocess.Popen(
            broker.process.args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )


# Kafka's run is in make reliability, to keep make test within its time.
@pytest.mark.parametrize("broker", ["nats", pytest.param("kafka", marks=pytest.mark.reliability)])
def test_events_the_broker_lost_after_acknowledging_them_reach_billing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, broker: str
) -> None:
    if broker == "kafka":
        tansu_or_skip()
    monkeypatch.setenv("MSC_RELAY_BROKER_CHECK_S", "1")
    with System(tmp_path, free_port(), free_port(), broker=broker) as system:
        cart_url = f"http://127.0.0.1:{system.cart_port}"
        billing_url = f"http://127.0.0.1:{system.billing_port}"
        for cart in CARTS:
            add_item(cart_url, cart)
        wait_until(
            lambda: all(billed_version(billing_url, c) == 1 for c in CARTS), DEADLINE_S, "bills"
        )
        billing = part_named(system, "billing-service")
        os.kill(billing.process.pid, signal.SIGSTOP)
        try:
            for cart in CARTS:
                add_item(cart_url, cart)
            wait_until(
                lambda: counter(cart_url, "msc_outbox_published_total") >= 2 * len(CARTS),
                DEADLINE_S,
                "the second events relayed and acknowledged",
            )
            restart_without_data(system)
        finally:
            os.kill(billing.process.pid, signal.SIGCONT)

        started = time.monotonic()
        wait_until(
            lambda: all(billed_version(billing_url, c) == 2 for c in CARTS),
            DEADLINE_S,
            "every bill to count the events the broker lost",
        )
        healed_s = time.monotonic() - started
        # The relay's audit (every second here) and billing's own healing race: the bills may
        # be whole before the audit has published the lost rows again, never instead of it.
        wait_until(
            lambda: counter(cart_url, "msc_relay_republished_rows_total") >= 2 * len(CARTS),
            DEADLINE_S,
            "the relay to publish again every row the broker lost",
        )
        assert counter(cart_url, "msc_relay_broker_regressions_total") >= 1
        print(f"{broker}: bills healed {healed_s:.1f} s after the broker came back empty")
