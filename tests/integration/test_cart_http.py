"""Every endpoint of the cart API and every status it promises, on a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(build_cart_app(Settings(data_dir=tmp_path), relay=False)) as client:
        yield client


def add(client: TestClient, cart: str, item: str, quantity: object) -> dict[str, object]:
    response = client.post(f"/carts/{cart}/items", json={"item_id": item, "quantity": quantity})
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def assert_error(response: object, status: int, fragment: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert isinstance(detail, str)
    assert fragment in detail


def test_add_remove_checkout_answer_the_cart(client: TestClient) -> None:
    assert add(client, "cart-123", "item-001", 2) == {
        "cart_id": "cart-123",
        "version": 1,
        "status": "open",
        "items": {"item-001": 2},
    }
    add(client, "cart-123", "item-002", 1)
    removed = client.delete("/carts/cart-123/items/item-001", params={"quantity": 1})
    assert removed.json()["items"] == {"item-001": 1, "item-002": 1}
    removed_all = client.delete("/carts/cart-123/items/item-002")
    assert removed_all.json()["items"] == {"item-001": 1}
    checked_out = client.post("/carts/cart-123/checkout")
    assert checked_out.status_code == 200
    assert checked_out.json() == {
        "cart_id": "cart-123",
        "version": 5,
        "status": "checked_out",
        "items": {"item-001": 1},
    }
    assert client.get("/carts/cart-123").json() == checked_out.json()


def test_time_travel_and_history(client: TestClient) -> None:
    add(client, "c1", "a", 1)
    add(client, "c1", "b", 2)
    assert client.get("/carts/c1", params={"version": 1}).json()["items"] == {"a": 1}
    assert client.get("/carts/c1", params={"version": 2}).json()["items"] == {"a": 1, "b": 2}
    assert_error(client.get("/carts/c1", params={"version": 3}), 404, "no version 3")
    assert_error(client.get("/carts/c1", params={"version": 0}), 422, "version")
    history = client.get("/carts/c1/events").json()
    assert history["cart_id"] == "c1"
    assert [(e["version"], e["event_type"]) for e in history["events"]] == [
        (1, "ItemAdded"),
        (2, "ItemAdded"),
    ]
    first = history["events"][0]
    assert first["data"]["item_id"] == "a"
    assert first["data"]["quantity"] == 1
    assert first["aggregate_type"] == "ShoppingCart"
    assert first["content_type"] == "application/json"


def test_history_after_a_version_holds_only_the_later_events(client: TestClient) -> None:
    for item in ("a", "b", "c"):
        add(client, "c1", item, 1)
    later = client.get("/carts/c1/events", params={"after_version": 1}).json()
    assert [e["version"] for e in later["events"]] == [2, 3]
    assert client.get("/carts/c1/events", params={"after_version": 3}).json()["events"] == []
    ghost = client.get("/carts/ghost/events", params={"after_version": 2})
    # Word for word: billing's gap repair tells "no such cart" from a wrong URL by it.
    assert (ghost.status_code, ghost.json()["detail"]) == (404, "cart ghost not found")
    assert_error(client.get("/carts/c1/events", params={"after_version": -1}), 422, "after")


def test_the_global_feed_pages_by_position(client: TestClient) -> None:
    for cart in ("x", "y", "z"):
        add(client, cart, "a", 1)
    page = client.get("/events", params={"limit": 2}).json()
    assert [e["aggregate_id"] for e in page["events"]] == ["x", "y"]
    rest = client.get("/events", params={"after": page["next_after"]}).json()
    assert [e["aggregate_id"] for e in rest["events"]] == ["z"]
    empty = client.get("/events", params={"after": rest["next_after"]}).json()
    assert empty == {"events": [], "next_after": rest["next_after"]}
    assert_error(client.get("/events", params={"limit": 0}), 422, "limit")
    assert_error(client.get("/events", params={"after": -1}), 422, "after")


def test_correlation_id_is_taken_from_the_request(client: TestClient) -> None:
    client.post(
        "/carts/c/items", json={"item_id": "a", "quantity": 1}, headers={"X-Correlation-ID": "r-1"}
    )
    [event] = client.get("/carts/c/events").json()["events"]
    assert event["correlation_id"] == "r-1"


def test_unknown_cart_is_404(client: TestClient) -> None:
    assert_error(client.get("/carts/ghost"), 404, "not found")
    assert_error(client.get("/carts/ghost/events"), 404, "not found")
    assert_error(client.delete("/carts/ghost/items/a"), 404, "not found")
    assert_error(client.post("/carts/ghost/checkout"), 404, "not found")


def test_rules_the_cart_state_forbids_are_409(client: TestClient) -> None:
    add(client, "c", "a", 2)
    assert_error(client.delete("/carts/c/items/a", params={"quantity": 3}), 409, "holds 2")
    assert_error(client.delete("/carts/c/items/b"), 409, "holds no b")
    client.delete("/carts/c/items/a")
    assert_error(client.post("/carts/c/checkout"), 409, "empty")
    add(client, "c", "a", 1)
    client.post("/carts/c/checkout")
    assert_error(
        client.post("/carts/c/items", json={"item_id": "a", "quantity": 1}), 409, "checked out"
    )
    assert_error(client.post("/carts/c/checkout"), 409, "checked out")
    assert len(client.get("/carts/c/events").json()["events"]) == 4


@pytest.mark.parametrize("quantity", [0, -1, 10**9, 10_001, 1.5, "2", None, True])
def test_bad_quantities_are_422(client: TestClient, quantity: object) -> None:
    response = client.post("/carts/c/items", json={"item_id": "a", "quantity": quantity})
    assert_error(response, 422, "quantity")


@pytest.mark.parametrize("quantity", ["0", "-1", "1000000000", "10001", "1.5", "two", ""])
def test_bad_quantities_to_remove_are_422(client: TestClient, quantity: str) -> None:
    add(client, "c", "a", 1)
    response = client.delete("/carts/c/items/a", params={"quantity": quantity})
    assert_error(response, 422, "quantity")


@pytest.mark.parametrize(
    "bad_id", ["has space", "x'; DROP TABLE events; --", "a" * 65, "é", "a/b", "%00"]
)
def test_bad_ids_are_422_and_write_nothing(client: TestClient, bad_id: str) -> None:
    response = client.post("/carts/c/items", json={"item_id": bad_id, "quantity": 1})
    assert_error(response, 422, "item_id")
    response = client.post(f"/carts/{bad_id}/items", json={"item_id": "a", "quantity": 1})
    assert response.status_code in (404, 422), response.text  # a slash never reaches the route
    assert "detail" in response.json()
    assert client.get("/events").json()["events"] == []


@pytest.mark.parametrize(
    ("body", "headers", "fragment"),
    [
        (b"not json", {"content-type": "application/json"}, "not valid JSON"),
        (b'{"item_id": "a"', {"content-type": "application/json"}, "not valid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, "body"),
        (
            b'{"item_id": "a", "quantity": 1, "extra": 1}',
            {"content-type": "application/json"},
            "extra",
        ),
        (b"item_id=a&quantity=1", {"content-type": "application/x-www-form-urlencoded"}, "JSON"),
        (b"", {}, "JSON"),
    ],
)
def test_bodies_that_are_not_the_expected_json_are_422(
    client: TestClient, body: bytes, headers: dict[str, str], fragment: str
) -> None:
    assert_error(client.post("/carts/c/items", content=body, headers=headers), 422, fragment)


def test_bad_correlation_header_is_422(client: TestClient) -> None:
    response = client.post(
        "/carts/c/items",
        json={"item_id": "a", "quantity": 1},
        headers={"X-Correlation-ID": "two words"},
    )
    assert_error(response, 422, "X-Correlation-ID")


def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": "ok"}
    metrics = client.get("/metrics", follow_redirects=False)
    assert metrics.status_code == 200
    assert "python_info" in metrics.text


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "Not Found")
    assert_error(client.put("/carts/c"), 405, "Method Not Allowed")
