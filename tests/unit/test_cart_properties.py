"""Property: any command history, replayed from stored events, equals a plain model."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microservice_connector.cart_service.application import CartService
from microservice_connector.cart_service.infrastructure.http_api import create_app
from microservice_connector.eventstore import GroupCommitStore, InMemoryEventStore

ITEMS = ["a", "b", "c"]
CART_NUMBERS = itertools.count()

add = st.tuples(st.just("add"), st.sampled_from(ITEMS), st.integers(-2, 10_002))
remove = st.tuples(st.just("remove"), st.sampled_from(ITEMS), st.none() | st.integers(0, 12))
checkout = st.tuples(st.just("checkout"), st.none(), st.none())
histories = st.lists(st.one_of(add, add, remove, checkout), max_size=25)


class PlainCart:
    """The rules, written as plainly as possible, to compare the real thing against."""

    def __init__(self) -> None:
        self.items: dict[str, int] = {}
        self.closed = False
        self.states: list[tuple[str, dict[str, int]]] = []  # after each accepted command

    def run(self, kind: str, item: str | None, quantity: int | None) -> int:
        valid_quantity = quantity is None or 1 <= quantity <= 10_000
        if kind == "add":
            assert item is not None
            assert quantity is not None
            if not valid_quantity:
                return 422
            if self.closed:
                return 409
            self.items[item] = self.items.get(item, 0) + quantity
        elif kind == "remove":
            assert item is not None
            if not valid_quantity:
                return 422
            if not self.states:
                return 404
            held = self.items.get(item, 0)
            if self.closed or held == 0 or (quantity or held) > held:
                return 409
            left = held - (quantity or held)
            if left:
                self.items[item] = left
            else:
                del self.items[item]
        else:
            if not self.states:
                return 404
            if self.closed or not self.items:
                return 409
            self.closed = True
        self.states.append(("checked_out" if self.closed else "open", dict(self.items)))
        return 200


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    store = GroupCommitStore(InMemoryEventStore())

    async def close() -> None:
        store.close()

    app = create_app(CartService(store), checks={}, on_shutdown=close)
    with TestClient(app) as client:
        yield client


def send(client: TestClient, cart: str, kind: str, item: str | None, qty: int | None) -> int:
    if kind == "add":
        return client.post(
            f"/carts/{cart}/items", json={"item_id": item, "quantity": qty}
        ).status_code
    if kind == "remove":
        params = {} if qty is None else {"quantity": qty}
        return client.delete(f"/carts/{cart}/items/{item}", params=params).status_code
    return client.post(f"/carts/{cart}/checkout").status_code


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(history=histories)
def test_replay_and_time_travel_match_a_plain_model(
    client: TestClient, history: list[tuple[str, str | None, int | None]]
) -> None:
    cart = f"cart-{next(CART_NUMBERS)}"  # a fresh cart for every example
    model = PlainCart()
    for kind, item, quantity in history:
        assert send(client, cart, kind, item, quantity) == model.run(kind, item, quantity)

    if not model.states:
        assert client.get(f"/carts/{cart}").status_code == 404
        return
    status, items = model.states[-1]
    now = client.get(f"/carts/{cart}").json()
    assert now == {"cart_id": cart, "version": len(model.states), "status": status, "items": items}
    for version, (status, items) in enumerate(model.states, start=1):
        then = client.get(f"/carts/{cart}", params={"version": version}).json()
        assert (then["version"], then["status"], then["items"]) == (version, status, items)
