"""64 HTTP clients on one cart, and 64 over 1,000 carts: the accepted commands, put in the
order of the versions they were given, replay to exactly the answers and final states the
service gave; rejected ones got 409, never a 500."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from support.processes import cart_service
from support.reliability import Figures, report

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]

CLIENTS = 64
ITEMS = ["item-001", "item-002", "item-003"]


@dataclass(frozen=True)
class Sent:
    cart_id: str
    command: str  # "add" or "remove"
    item_id: str
    quantity: int
    status: int
    cart: dict[str, Any] | None  # the cart answered with a 200


async def _hammer(url: str, carts: list[str], commands: int, seed: int) -> list[Sent]:
    rng = random.Random(seed)
    plan = [
        (
            rng.choice(carts),
            "add" if rng.random() < 0.7 else "remove",
            rng.choice(ITEMS),
            rng.randint(1, 4),
        )
        for _ in range(commands)
    ]
    queue: asyncio.Queue[tuple[str, str, str, int]] = asyncio.Queue()
    for step in plan:
        queue.put_nowait(step)
    sent: list[Sent] = []
    # Idle connections are dropped well before the server's 5 s keep-alive ends, so a request
    # never goes out on a connection the server is closing at that moment.
    limits = httpx.Limits(max_connections=CLIENTS, keepalive_expiry=1.0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:

        async def client() -> None:
            while not queue.empty():
                cart_id, command, item, quantity = queue.get_nowait()
                if command == "add":
                    body = {"item_id": item, "quantity": quantity}
                    response = await http.post(f"{url}/carts/{cart_id}/items", json=body)
                else:
                    response = await http.delete(
                        f"{url}/carts/{cart_id}/items/{item}", params={"quantity": quantity}
                    )
                ok = response.status_code == 200
                sent.append(
                    Sent(
                        cart_id,
                        command,
                        item,
                        quantity,
                        response.status_code,
                        response.json() if ok else None,
                    )
                )

        await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return sent


def _replay(sent: list[Sent]) -> dict[str, dict[str, int]]:
    """Apply each cart's accepted commands in version order; each answer must equal the
    state reached at its version. Returns every cart's final items."""
    finals: dict[str, dict[str, int]] = {}
    by_cart: dict[str, list[Sent]] = {}
    for one in sent:
        if one.status == 200:
            by_cart.setdefault(one.cart_id, []).append(one)
    for cart_id, accepted in by_cart.items():
        accepted.sort(key=lambda one: one.cart["version"])  # type: ignore[index]
        assert [one.cart["version"] for one in accepted] == list(range(1, len(accepted) + 1))  # type: ignore[index]
        items: dict[str, int] = {}
        for one in accepted:
            if one.command == "add":
                items[one.item_id] = items.get(one.item_id, 0) + one.quantity
            else:
                held = items.get(one.item_id, 0)
                assert held >= one.quantity, f"{cart_id}: accepted a removal of more than held"
                items[one.item_id] = held - one.quantity
                if not items[one.item_id]:
                    del items[one.item_id]
            assert one.cart["items"] == items, (cart_id, one)  # type: ignore[index]
        finals[cart_id] = items
    return finals


@pytest.mark.parametrize(
    ("carts", "commands"), [(1, 1500), (1000, 6000)], ids=["1-cart", "1000-carts"]
)
def test_concurrent_clients_equal_a_sequential_history(
    tmp_path: Path, carts: int, commands: int
) -> None:
    cart_ids = [f"hot-{n}" for n in range(carts)]
    with cart_service(tmp_path) as url:
        started = time.monotonic()
        sent = asyncio.run(_hammer(url, cart_ids, commands, seed=carts))
        seconds = time.monotonic() - started
        finals = _replay(sent)
        with httpx.Client(timeout=60) as http:
            for cart_id, items in finals.items():
                assert http.get(f"{url}/carts/{cart_id}").json()["items"] == items
            events = sum(len(http.get(f"{url}/carts/{c}/events").json()["events"]) for c in finals)
    statuses = [one.status for one in sent]
    accepted = statuses.count(200)
    rejected = [one for one in sent if one.status != 200]
    report(
        Figures(
            f"concurrency: {CLIENTS} clients on {carts} cart(s), {statuses.count(409)} got 409, "
            f"{commands / seconds:.0f} commands/s",
            1,
            accepted,
            events,
            accepted - events if accepted > events else 0,
            events - accepted if events > accepted else 0,
            sum(status >= 500 for status in statuses),
            0.0,
        )
    )
    assert events == accepted
    # A removal may come before the cart's first add (404) or ask for more than it holds (409).
    assert all(one.status in (404, 409) and one.command == "remove" for one in rejected), {
        one.status for one in rejected
    }
