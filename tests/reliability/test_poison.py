"""Hostile messages injected on `cart.events`: random bytes, huge payloads, unknown types,
wrong versions, missing headers. Every one ends in the dead-letter stream, and the consumer
keeps billing real commands meanwhile."""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from pathlib import Path

import nats
import pytest

from microservice_connector.messaging.nats.dead_letters import NatsDeadLetters
from support.processes import wait_for
from support.reliability import Load, audit, audited, report, running_system

pytestmark = [pytest.mark.e2e, pytest.mark.nats]

HEADERS = {
    "event-type": "ItemAdded",
    "aggregate-type": "ShoppingCart",
    "aggregate-version": "1",
    "content-type": "application/json",
    "schema-version": "1",
}
GOOD_PAYLOAD = (
    b'{"cart_id":"%s","item_id":"item-001","quantity":1,"timestamp":"2024-01-01T00:00:00Z"}'
)


def _headers(cart_id: str, **changes: str | None) -> dict[str, str]:
    headers = {**HEADERS, "event-id": str(uuid.uuid4()), "aggregate-id": cart_id, **changes}
    return {name: value for name, value in headers.items() if value is not None}


def poison(rng: random.Random) -> list[tuple[str, bytes, dict[str, str]]]:
    """(what, payload, headers) of every kind of hostile message."""
    messages = []
    for n in range(20):
        payload = rng.randbytes(rng.randint(1, 2000))
        messages.append(("random bytes", payload, _headers(f"poison-bytes-{n}")))
    for n in range(3):
        huge = b'{"cart_id":"x","item_id":"' + b"A" * 900_000 + b'","quantity":1}'
        messages.append(("huge payload", huge, _headers(f"poison-huge-{n}")))
        messages.append(("huge random", rng.randbytes(900_000), _headers(f"poison-hr-{n}")))
    for n, kind in enumerate(["CartExploded", "", "ItemAdded\x00", "x" * 300]):
        cart = f"poison-type-{n}"
        messages.append(
            ("unknown type", GOOD_PAYLOAD % cart.encode(), _headers(cart, **{"event-type": kind}))
        )
    for n, version in enumerate(["abc", "0", "-1", "", "1.5", "99999999999999999999999"]):
        cart = f"poison-version-{n}"
        headers = _headers(cart, **{"aggregate-version": version})
        messages.append(("wrong version", GOOD_PAYLOAD % cart.encode(), headers))
    for n, schema in enumerate(["999", "zero"]):
        cart = f"poison-schema-{n}"
        headers = _headers(cart, **{"schema-version": schema})
        messages.append(("wrong schema version", GOOD_PAYLOAD % cart.encode(), headers))
    for n, missing in enumerate(["event-type", "aggregate-id", "aggregate-version", "event-id"]):
        cart = f"poison-missing-{n}"
        headers = _headers(cart, **{missing: None})
        messages.append(("missing header", GOOD_PAYLOAD % cart.encode(), headers))
    messages.append(("no headers", GOOD_PAYLOAD % b"poison-headless", {}))
    cart = "poison-mismatch"
    mismatch = _headers(cart, **{"content-type": "application/x-protobuf"})
    messages.append(("wrong content type", GOOD_PAYLOAD % cart.encode(), mismatch))
    messages.append(("payload of another cart", GOOD_PAYLOAD % b"someone-else", _headers(cart)))
    rng.shuffle(messages)
    return messages


async def _inject(url: str, messages: list[tuple[str, bytes, dict[str, str]]]) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for _, payload, headers in messages:
            await js.publish("cart.events", payload, headers=headers or None)
    finally:
        await client.close()


async def _dead_letters(url: str) -> int:
    client = await nats.connect(url)
    try:
        return len(await NatsDeadLetters(client.jetstream()).list(limit=1000))
    finally:
        await client.close()


@pytest.mark.parametrize(
    "kinds",
    [
        pytest.param("one", marks=pytest.mark.reliability_smoke),
        pytest.param("all", marks=pytest.mark.reliability),
    ],
)
def test_poison_is_dead_lettered_and_the_consumer_never_stalls(tmp_path: Path, kinds: str) -> None:
    rng = random.Random(7)
    messages = poison(rng) if kinds == "all" else [("random bytes", os.urandom(64), _headers("p"))]
    carts = [f"beside-poison-{n}" for n in range(50)]
    # A version far ahead looks like an early event: let it wait 20 s, not the default minutes.
    quick_gap = {"MSC_BILLING_GAP_WAIT_S": "20"}
    with (
        running_system(tmp_path, env=quick_gap) as system,
        Load(system.cart.url, carts, clients=2) as load,
    ):
        load.wait_for_answers(200, 20)
        started = time.monotonic()
        asyncio.run(_inject(system.nats.url, messages))
        # Real commands keep being billed while the poison goes through.
        load.wait_for_answers(200, 50)
        load.stop()
        result = audit(system, load, since=started, drain_timeout=120)
        wait_for(
            lambda: asyncio.run(_dead_letters(system.nats.url)) == len(messages),
            120,  # an early version waits for its predecessor (20 s here) before giving up
            f"{len(messages)} dead letters",
        )
        dead_lettered = system.metric(
            system.billing.url, "msc_billing_events_total", outcome="dead_lettered"
        )
        recover_s = time.monotonic() - started
    report(
        audited(
            f"poison: {len(messages)} hostile messages, all dead-lettered",
            1,
            result,
            load,
            recover_s,
        )
    )
    assert (result.lost, result.wrong_bills, load.server_errors()) == (0, 0, 0)
    assert dead_lettered == len(messages)
