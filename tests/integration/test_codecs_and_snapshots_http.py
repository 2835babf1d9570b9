"""The cart API over a real SQLite store with `MSC_SERIALIZER` and `MSC_SNAPSHOT_EVERY`:
Protobuf events are stored and published as Protobuf yet shown as JSON, a store mixing both
codecs reads right, and snapshots are taken and used."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings


def app(tmp_path: Path, **settings: Any) -> TestClient:
    return TestClient(build_cart_app(Settings(data_dir=tmp_path, **settings), relay=False))


def add(client: TestClient, cart: str, item: str, quantity: int) -> None:
    response = client.post(f"/carts/{cart}/items", json={"item_id": item, "quantity": quantity})
    assert response.status_code == 200, response.text


def rows(tmp_path: Path, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(tmp_path / "events.db")) as db:
        return db.execute(query).fetchall()


def test_a_store_mixing_json_and_protobuf_reads_right_and_shows_json(tmp_path: Path) -> None:
    with app(tmp_path, serializer="json") as client:
        add(client, "c", "item-001", 2)
    with app(tmp_path, serializer="protobuf") as client:
        add(client, "c", "item-002", 3)
        assert client.delete("/carts/c/items/item-001", params={"quantity": 1}).status_code == 200
    with app(tmp_path, serializer="json") as client:
        assert client.get("/carts/c").json()["items"] == {"item-001": 1, "item-002": 3}
        history = client.get("/carts/c/events").json()["events"]
        feed = client.get("/events").json()["events"]

    assert [e["content_type"] for e in history] == [
        "application/json",
        "application/x-protobuf",
        "application/x-protobuf",
    ]
    assert [e["data"] for e in history] == [e["data"] for e in feed]
    assert [{k: v for k, v in e["data"].items() if k != "timestamp"} for e in history] == [
        {"cart_id": "c", "item_id": "item-001", "quantity": 2},
        {"cart_id": "c", "item_id": "item-002", "quantity": 3},
        {"cart_id": "c", "item_id": "item-001", "quantity": 1},
    ]
    assert all(e["data"]["timestamp"].endswith("Z") for e in history)

    # Each event keeps its own content type, in the store and in its outbox headers.
    stored = rows(tmp_path, "SELECT metadata, event_data FROM events ORDER BY id")
    outbox = rows(tmp_path, "SELECT headers, payload FROM outbox ORDER BY id")
    for (metadata, data), (headers, payload), event in zip(stored, outbox, history, strict=True):
        assert json.loads(metadata)["content_type"] == event["content_type"]
        assert json.loads(headers)["content-type"] == event["content_type"]
        assert payload == data
    assert stored[1][1][:1] != b"{"  # Protobuf bytes, not JSON


def test_snapshots_are_taken_every_n_events_and_loading_uses_them(tmp_path: Path) -> None:
    with app(tmp_path, snapshot_every=3) as client:
        for n in range(7):
            add(client, "c", f"item-{n % 2}", 1)
    assert rows(tmp_path, "SELECT aggregate_id, version, schema_version FROM snapshots") == [
        ("c", 6, 1)
    ]
    with app(tmp_path, snapshot_every=3) as client:  # a cold start: snapshot plus one event
        assert client.get("/carts/c").json() == {
            "cart_id": "c",
            "version": 7,
            "status": "open",
            "items": {"item-0": 4, "item-1": 3},
        }
        assert client.get("/carts/c", params={"version": 2}).json()["items"] == {
            "item-0": 1,
            "item-1": 1,
        }


def test_snapshot_every_zero_turns_them_off(tmp_path: Path) -> None:
    with app(tmp_path, snapshot_every=0) as client:
        for _ in range(5):
            add(client, "c", "a", 1)
    assert rows(tmp_path, "SELECT count(*) FROM snapshots") == [(0,)]
