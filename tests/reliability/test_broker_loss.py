"""The broker loses what it acknowledged, and billing heals from the event store.

Billing is frozen (SIGSTOP) while each cart gets two more commands; the relay publishes them
and the broker acknowledges. Then every process is SIGKILLed and the broker's data thrown
away (NATS: its store folder; Kafka: Tansu keeps everything in memory, so a restart is
empty), and everything starts again. With or without a later command on each cart, every
bill and invoice must match its cart within `HEAL_LIMIT_S` of the services answering again,
with no dead letter; the seconds that took are the suite's "seconds to recover"."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest

from support.processes import run_msc, wait_for
from support.reliability import (
    Figures,
    Load,
    System,
    audit,
    audited,
    report,
    running_system,
)
from support.system import expected_bill

HEAL_LIMIT_S = 30.0
Broker = Literal["nats", "kafka"]

CASES = [
    pytest.param(
        "nats", 5, False, marks=[pytest.mark.nats, pytest.mark.reliability_smoke], id="nats-smoke"
    ),
    pytest.param("nats", 30, False, marks=[pytest.mark.nats, pytest.mark.reliability], id="nats"),
    pytest.param(
        "nats", 30, True, marks=[pytest.mark.nats, pytest.mark.reliability], id="nats-later"
    ),
    pytest.param(
        "kafka", 30, False, marks=[pytest.mark.kafka, pytest.mark.reliability], id="kafka"
    ),
    pytest.param(
        "kafka", 30, True, marks=[pytest.mark.kafka, pytest.mark.reliability], id="kafka-later"
    ),
]


@pytest.mark.e2e
@pytest.mark.parametrize(("broker", "carts", "later_command"), CASES)
def test_bills_heal_from_the_store_after_the_broker_lost_acknowledged_events(
    tmp_path: Path, broker: Broker, carts: int, later_command: bool
) -> None:
    cart_ids = [f"loss-{n}" for n in range(carts)]
    with running_system(tmp_path, broker_kind=broker, env=STORE_ONLY) as system:
        for cart_id in cart_ids:
            command(system, "POST", f"/carts/{cart_id}/items", item="item-001")
        system.wait_until_billed(dict.fromkeys(cart_ids, 1), 60)

        freeze(system)
        for n, cart_id in enumerate(cart_ids):
            command(system, "POST", f"/carts/{cart_id}/items", item="item-002")
            if n % 2 and not later_command:  # the lost event is a checkout: an invoice is due
                command(system, "POST", f"/carts/{cart_id}/checkout")
            else:
                command(system, "POST", f"/carts/{cart_id}/items", item="item-003")
        wait_for(lambda: system.pending_outbox() == 0, 60, "the relay to publish everything")

        kill_everything_and_lose_the_broker(system, broker)
        restarted = time.monotonic()
        system.cart.start()
        system.billing.start()
        answering = time.monotonic()
        if later_command:
            for n, cart_id in enumerate(cart_ids):
                if n % 2:
                    command(system, "POST", f"/carts/{cart_id}/checkout")
                else:
                    command(system, "POST", f"/carts/{cart_id}/items", item="item-004")

        wait_until_healed(system, cart_ids, HEAL_LIMIT_S)
        heal_s = time.monotonic() - answering  # what HEAL_LIMIT_S bounds
        dead_letters = system.http.get(f"{system.billing.url}/billing/status").json()
        feed = system.feed()
        lost = [event for event in feed if event["version"] in (2, 3)]
        sources = {applied_via(system, event) for event in lost}
        events = len(feed)

    later = "a later command" if later_command else "no later command"
    print(
        f"\nservices up {answering - restarted:.1f} s after the restart, healed {heal_s:.1f} s on"
    )
    report(
        Figures(
            f"broker data loss ({broker}, {later}): seconds to heal",
            1,
            carts * (4 if later_command else 3),
            events,
            0,
            0,
            0,
            heal_s,
        )
    )
    assert dead_letters["dead_letters"] == 0, dead_letters
    assert sources <= {"repair", "catch-up"}, sources  # the lineage view says so


# The relays' broker audit would publish the lost events again, and billing would take them
# from the broker: with it off, what heals the bills is billing's own repair and catch-up
# from the store. (tests/e2e/test_broker_data_loss.py proves the audit's side.)
STORE_ONLY = {"MSC_RELAY_BROKER_AUDIT": "false"}


def applied_via(system: System, event: dict[str, Any]) -> str | None:
    """Where billing got the event it applied, as the event browser's lineage shows it."""
    params = {"cart_id": event["aggregate_id"], "version": event["version"]}
    url = f"{system.billing.url}/billing/events/{event['event_id']}"
    handling = system.http.get(url, params=params).json()
    assert handling["outcome"] == "applied", handling
    via: str | None = handling["applied_via"]
    return via


@pytest.mark.e2e
@pytest.mark.reliability
@pytest.mark.parametrize(
    "broker",
    [pytest.param("nats", marks=pytest.mark.nats), pytest.param("kafka", marks=pytest.mark.kafka)],
)
def test_every_process_killed_at_once_under_load_loses_and_dead_letters_nothing(
    tmp_path: Path, broker: Broker
) -> None:
    """The issue's Kafka crash: 8 clients, every process SIGKILLed at once 3 times (Tansu
    comes back empty each time; nats-server with what it had flushed)."""
    rounds, recover_s = 3, 0.0
    carts = [f"crash-{n}" for n in range(100)]
    with running_system(tmp_path, broker_kind=broker) as system:
        with Load(system.cart.url, carts, clients=8, seed=13) as load:
            for _ in range(rounds):
                load.wait_for_answers(200, 60)
                system.billing.kill()
                system.cart.kill()
                if broker == "kafka":
                    assert system.tansu is not None
                    system.tansu.kill()
                    system.tansu.start()
                else:
                    assert system.nats is not None
                    system.nats.kill()
                    system.nats.start()
                killed = time.monotonic()
                system.cart.start()
                system.billing.start()
                load.wait_for_answers(200, 1)
                recover_s = max(recover_s, time.monotonic() - killed)
            load.wait_for_answers(200, 30)
        result = audit(system, load, drain_timeout=HEAL_LIMIT_S + 60)
        dead_letters = system.http.get(f"{system.billing.url}/billing/status").json()

    report(audited(f"crash: every process SIGKILL x3 ({broker})", rounds, result, load, recover_s))
    assert (result.lost, result.wrong_bills, load.server_errors()) == (0, 0, 0), load.statuses()
    assert dead_letters["dead_letters"] == 0, dead_letters


def command(system: System, method: str, path: str, *, item: str | None = None) -> None:
    """One command, answered 200."""
    body = {"item_id": item, "quantity": 1} if item else None
    response = system.http.request(method, f"{system.cart.url}{path}", json=body)
    assert response.status_code == 200, response.text


def freeze(system: System) -> None:
    """SIGSTOP billing: it holds its connections but reads, applies and acks nothing."""
    system.billing.freeze()


def kill_everything_and_lose_the_broker(system: System, broker: Broker) -> None:
    """SIGKILL both services (a stopped process dies too) and the broker, and throw the
    broker's data away."""
    system.billing.kill()
    system.cart.kill()
    if broker == "kafka":
        assert system.tansu is not None
        system.tansu.kill()
        system.tansu.start()  # memory-only: it comes back empty
    else:
        assert system.nats is not None
        system.nats.kill()
        shutil.rmtree(system.nats.store_dir)
        system.nats.start()


def wait_until_healed(system: System, cart_ids: list[str], timeout: float) -> None:
    """Poll until every bill (and invoice) matches its cart; fail after `timeout`, naming
    the carts still wrong."""
    wrong = list(cart_ids)

    def healed() -> bool:
        wrong[:] = [cart_id for cart_id in wrong if not matches(system, cart_id)]
        return not wrong

    try:
        wait_for(healed, timeout, "every bill to match its cart")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still wrong: {wrong[:10]}") from exc


def matches(system: System, cart_id: str) -> bool:
    """Whether billing's bill, and its invoice once checked out, are the cart's."""
    cart = system.http.get(f"{system.cart.url}/carts/{cart_id}").json()
    expected = expected_bill(cart)
    if system.bill(cart_id) != expected:
        return False
    if not expected["checked_out"]:
        return True
    invoice = invoice_of(system.http, system.billing.url, cart_id)
    return invoice is not None and (invoice["lines"], invoice["total_cents"]) == (
        expected["lines"],
        expected["total_cents"],
    )


def invoice_of(http: httpx.Client, billing_url: str, cart_id: str) -> dict[str, Any] | None:
    """Billing's invoice of the cart, or None before there is one."""
    response = http.get(f"{billing_url}/invoices/{cart_id}")
    return response.json() if response.status_code == 200 else None


@pytest.mark.e2e
@pytest.mark.nats
@pytest.mark.reliability
def test_msc_demo_chaos_shows_the_bills_healed() -> None:
    result = run_msc("demo", "--chaos", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "healed: every bill matches its cart" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert sum("✓" in row for row in rows) == 6, result.stdout  # every chaos cart matches
