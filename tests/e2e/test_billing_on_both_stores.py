"""Billing as a user meets it, on SQLite and on PostgreSQL (both stores), with real
processes and a real nats-server: values at the edge of what the API accepts end in a
right invoice, a clear 4xx or one clear dead letter while the other carts are billed; and
`msc billing rebuild` reproduces bills and invoices exactly after prices changed often."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest

from microservice_connector.events.cart import CartCheckedOut, ItemAdded
from microservice_connector.messaging.nats.dead_letters import NatsDeadLetters
from support import postgres
from support.processes import run_msc, wait_for
from support.reliability import System, running_system
from support.system import expected_bill

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

LONGEST_ID = "L" * 64
BESIDE = [f"beside-{n}" for n in range(8)]


@dataclass
class Running:
    """One system for the tests of a database (they use different carts): starting the
    processes is most of the time these tests take."""

    system: System
    env: dict[str, str]  # what puts both stores on the database
    data_dir: Path
    backend: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def running(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Running]:
    data_dir = tmp_path_factory.mktemp(request.param)
    with ExitStack() as stack:
        env: dict[str, str] = {}
        if request.param == "postgresql":
            server = request.getfixturevalue("postgres_server_url")
            env = {
                "MSC_DATABASE_URL": stack.enter_context(postgres.fresh_schema(server)),
                "MSC_BILLING_DATABASE_URL": stack.enter_context(postgres.fresh_schema(server)),
            }
        system = stack.enter_context(running_system(data_dir, env=env))
        yield Running(system, env, data_dir, request.param)


def test_edge_values_end_in_an_invoice_a_4xx_or_one_dead_letter(running: Running) -> None:
    system = running.system
    http, cart, billing = system.http, system.cart.url, system.billing.url
    assert system.nats is not None
    _shop(system, BESIDE[:4])
    # A cart id as long as the API allows: its invoice id is longer still.
    _post(system, f"/carts/{LONGEST_ID}/items", {"item_id": "item-001", "quantity": 2})
    _post(system, f"/carts/{LONGEST_ID}/checkout")
    # An invoice above 2^31 cents: 200,000 of item-003 at 125.00.
    for _ in range(20):
        _post(system, "/carts/big/items", {"item_id": "item-003", "quantity": 10_000})
    _post(system, "/carts/big/checkout")
    # What the API refuses up front.
    refused = [
        http.post(f"{cart}/carts/{'L' * 65}/items", json={"item_id": "a", "quantity": 1}),
        http.post(f"{cart}/carts/big/items", json={"item_id": "a", "quantity": 10_001}),
    ]
    # What only a foreign publisher can send: ids the API refuses, a quantity no command
    # adds (whose total no 64-bit column would hold), and a checkout after it that the store
    # never held either.
    foreign = [
        _message("M" * 65, 1, ItemAdded("M" * 65, "item-001", 1, _now())),
        _message("M" * 5000, 1, ItemAdded("M" * 5000, "item-001", 1, _now())),
        _message("bad id", 1, ItemAdded("bad id", "item-001", 1, _now())),
        _message("huge", 1, ItemAdded("huge", "item-001", 2**62, _now())),
        _message("huge", 2, CartCheckedOut("huge", _now())),
    ]
    asyncio.run(_publish(system.nats.url, foreign))
    _shop(system, BESIDE[4:])
    wait_for(lambda: len(_dead_letters(system)) == 5, 120, "5 dead letters")
    everyone = [*BESIDE, LONGEST_ID, "big"]
    system.wait_until_billed(
        {c: http.get(f"{cart}/carts/{c}").json()["version"] for c in everyone}, 60
    )

    invoices = {c: http.get(f"{billing}/invoices/{c}") for c in everyone}
    right = sum(
        response.status_code == 200
        and response.json()["total_cents"]
        == expected_bill(http.get(f"{cart}/carts/{c}").json())["total_cents"]
        for c, response in invoices.items()
    )
    errors = [letter.error for letter in _dead_letters(system)]
    ready = http.get(f"{billing}/readyz").status_code
    print(
        f"\n| billing edges ({running.backend}) | {right}/{len(everyone)} invoices right "
        f"| {len(errors)} dead letters | {sum(r.status_code == 422 for r in refused)} 422 "
        f"| 0 server errors: {all(r.status_code < 500 for r in refused)} |"
    )
    assert [r.status_code for r in refused] == [422, 422]
    assert right == len(everyone)
    assert invoices[LONGEST_ID].json()["invoice_id"] == f"inv-{LONGEST_ID}"
    assert invoices["big"].json()["total_cents"] == 2_500_000_000
    assert sum("header aggregate-id" in e and "is not an id" in e for e in errors) == 3
    assert sum("an ItemAdded adds at most 10000" in e for e in errors) == 1
    assert sum("is missing from the store itself" in e for e in errors) == 1
    assert all(len(e) < 1000 for e in errors)
    assert ready == 200


def test_rebuild_reproduces_bills_and_invoices_after_many_price_changes(
    running: Running,
) -> None:
    carts = [f"priced-{n}" for n in range(6)]
    system = running.system
    http, billing = system.http, system.billing.url
    for round_ in range(4):
        for item, cents in (("item-001", 1000 + 111 * round_), ("item-new", 70 * round_)):
            answer = http.put(f"{billing}/prices/{item}", json={"unit_price_cents": cents})
            assert answer.status_code == 200, answer.text
            assert answer.json()["unit_price_cents"] == cents
        # Cart n changes in rounds 0..n only, so the carts end at different prices.
        for cart in carts[round_:]:
            _post(system, f"/carts/{cart}/items", {"item_id": "item-001", "quantity": 2})
            _post(system, f"/carts/{cart}/items", {"item_id": "item-new", "quantity": 2})
            if round_ % 2:
                _delete(system, f"/carts/{cart}/items/item-001?quantity=1")
    for cart in carts[::2]:
        _post(system, f"/carts/{cart}/checkout")
    versions = {c: http.get(f"{system.cart.url}/carts/{c}").json()["version"] for c in carts}
    system.wait_until_billed(versions, 60)
    before = _read_model(system, carts)
    rebuilt = run_msc(
        "billing",
        "rebuild",
        "--data-dir",
        str(running.data_dir),
        "--cart-url",
        system.cart.url,
        env=running.env,
    )
    assert rebuilt.returncode == 0, rebuilt.stderr
    after = _read_model(system, carts)
    used = {
        line["price_version"]
        for bill, _ in before.values()
        for line in bill["lines"].values()
        if line["price_version"] is not None
    }
    assert len(used) >= 3, "the carts should have been priced at several price versions"
    assert sum(invoice is not None for _, invoice in before.values()) == 3
    assert after == before


def _read_model(system: System, carts: list[str]) -> dict[str, tuple[Any, Any]]:
    """Each cart's bill and invoice (None before checkout) as billing's API answers them."""
    found = {}
    for cart in carts:
        invoice = system.http.get(f"{system.billing.url}/invoices/{cart}")
        found[cart] = (system.bill(cart), invoice.json() if invoice.status_code == 200 else None)
    return found


def _shop(system: System, carts: list[str]) -> None:
    for cart in carts:
        _post(system, f"/carts/{cart}/items", {"item_id": "item-002", "quantity": 3})
        _post(system, f"/carts/{cart}/checkout")


def _post(system: System, path: str, body: dict[str, Any] | None = None) -> None:
    answer = system.http.post(f"{system.cart.url}{path}", json=body)
    assert answer.status_code == 200, answer.text


def _delete(system: System, path: str) -> None:
    answer = system.http.delete(f"{system.cart.url}{path}")
    assert answer.status_code == 200, answer.text


def _now() -> datetime:
    return datetime.now(UTC)


def _message(cart_id: str, version: int, event: Any) -> tuple[bytes, dict[str, str]]:
    headers = {
        "event-id": str(uuid.uuid4()),
        "event-type": type(event).__name__,
        "aggregate-id": cart_id,
        "aggregate-version": str(version),
        "content-type": "application/json",
    }
    return msgspec.json.encode(event), headers


async def _publish(url: str, messages: list[tuple[bytes, dict[str, str]]]) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for payload, headers in messages:
            await js.publish("cart.events", payload, headers=headers)
    finally:
        await client.close()


def _dead_letters(system: System) -> list[Any]:
    assert system.nats is not None
    url = system.nats.url

    async def listed() -> list[Any]:
        client = await nats.connect(url)
        try:
            return await NatsDeadLetters(client.jetstream()).list(limit=100)
        finally:
            await client.close()

    return asyncio.run(listed())
