"""Billing's endpoints behind the event browser, over HTTP with a real nats-server: what
billing did with one event, its status, dead letters listed and replayed, and CORS."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from microservice_connector.billing_service.application import BillingLedger, CartEventIn
from microservice_connector.billing_service.infrastructure.cart_event_handler import (
    CartEventHandler,
)
from microservice_connector.billing_service.main import build_billing_app, open_billing_repository
from microservice_connector.events.cart import ItemAdded
from microservice_connector.events.registry import default_registry
from microservice_connector.messaging.message import Delivery, Message
from microservice_connector.settings import Settings
from support.nats import NatsServer
from support.processes import wait_for

pytestmark = pytest.mark.nats

CART_ORIGIN = "http://127.0.0.1:8080"
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def settings(tmp_path: Path, nats: NatsServer, **more: str) -> Settings:
    return Settings(
        data_dir=tmp_path, broker="nats", nats_url=nats.url, cart_url=CART_ORIGIN, **more
    )


@pytest.fixture
def client(tmp_path: Path, nats_server: NatsServer) -> Iterator[TestClient]:
    with TestClient(build_billing_app(settings(tmp_path, nats_server))) as client:
        yield client


def test_an_applied_event_is_known_from_its_bill_and_an_unknown_one_is_404(
    client: TestClient, tmp_path: Path
) -> None:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    try:  # applied by another process: this billing's memory knows nothing of them
        BillingLedger(repository).apply_batch([_added(1), _added(2)])
    finally:
        repository.close()
    latest = client.get("/billing/events/ev-2", params={"cart_id": "c-1", "version": 2}).json()
    assert (latest["outcome"], latest["cart_id"], latest["version"]) == ("applied", "c-1", 2)
    assert latest["applied_at"] is not None  # the bill's latest version: when it changed
    earlier = client.get("/billing/events/ev-1", params={"cart_id": "c-1", "version": 1}).json()
    assert (earlier["outcome"], earlier["applied_at"]) == ("applied", None)
    ahead = client.get("/billing/events/ev-3", params={"cart_id": "c-1", "version": 3})
    assert ahead.status_code == 404
    assert "ev-3" in ahead.json()["detail"]
    assert client.get("/billing/events/ev-2").status_code == 404  # no hint, no memory
    assert client.get("/billing/events/not an id!").status_code == 422
    assert client.get("/billing/events/ev-1", params={"version": 0}).status_code == 422


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_the_bill_stamp_says_how_far_billing_got_and_when_on_each_database(
    tmp_path: Path, database: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("postgres_url") if database == "postgres" else None
    repository = open_billing_repository(Settings(data_dir=tmp_path, billing_database_url=url))
    try:
        before = datetime.now(UTC)
        BillingLedger(repository).apply_batch([_added(1), _added(2)])
        stamp, none = repository.stamp("c-1"), repository.stamp("c-2")
    finally:
        repository.close()
    assert none is None
    assert stamp is not None
    assert stamp.last_version == 2
    assert before <= stamp.updated_at <= datetime.now(UTC)


def _added(version: int) -> CartEventIn:
    return CartEventIn(f"ev-{version}", "c-1", version, ItemAdded("c-1", "item-001", 1, NOW))


def test_the_handler_remembers_each_outcome_in_memory(tmp_path: Path) -> None:
    repository = open_billing_repository(Settings(data_dir=tmp_path))
    handler = CartEventHandler(BillingLedger(repository), default_registry())
    try:
        first, early = _delivery("ev-1", 1), _delivery("ev-3", 3)
        asyncio.run(handler([first, early]))
        asyncio.run(handler([_delivery("ev-1", 1)]))
    finally:
        repository.close()
    duplicate, deferred = handler.handled.get("ev-1"), handler.handled.get("ev-3")
    assert duplicate is not None
    assert duplicate.counts == {"applied": 1, "duplicate": 1}
    assert duplicate.applied_at is not None
    assert deferred is not None
    assert deferred.last_outcome == "deferred"


def test_status_reports_lag_and_dead_letters(client: TestClient) -> None:
    wait_for(
        lambda: client.get("/billing/status").json()["consumer_lag"] is not None,
        20,
        "billing to measure its consumer lag",
    )
    status = client.get("/billing/status").json()
    assert status == {"consumer_lag": 0, "dead_letters": 0, "problems": []}


def test_dead_letters_list_and_an_unknown_replay_is_404(client: TestClient) -> None:
    assert client.get("/deadletters").json() == []
    missing = client.post("/deadletters/7/replay")
    assert missing.status_code == 404
    assert "7" in missing.json()["detail"]
    assert client.post("/deadletters/0/replay").status_code == 422
    assert client.post("/deadletters/abc/replay").status_code == 422
    assert client.get("/deadletters", params={"limit": 0}).status_code == 422


def test_the_cart_origin_may_call_billing_and_others_may_not(client: TestClient) -> None:
    allowed = client.get("/deadletters", headers={"Origin": CART_ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == CART_ORIGIN
    twin = client.get("/prices", headers={"Origin": "http://localhost:8080"})
    assert twin.headers["access-control-allow-origin"] == "http://localhost:8080"
    other = client.get("/prices", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = client.options(
        "/deadletters/1/replay",
        headers={
            "Origin": CART_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    refused = client.options(
        "/prices", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert refused.status_code == 400
    assert refused.json() == {"detail": "cross-origin request refused: origin"}


def test_replay_needs_the_token_when_one_is_set(tmp_path: Path, nats_server: NatsServer) -> None:
    app = build_billing_app(settings(tmp_path, nats_server, api_token="s3cret"))
    with TestClient(app) as client:
        refused = client.post("/deadletters/1/replay", headers={"Origin": CART_ORIGIN})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == CART_ORIGIN  # UI can read it
        allowed = client.post("/deadletters/1/replay", headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 404


def _delivery(event_id: str, version: int) -> Delivery:
    payload = (
        b'{"cart_id":"c-1","item_id":"item-001","quantity":1,"timestamp":"2026-11-25T00:00:00Z"}'
    )
    message = Message(
        id=event_id,
        topic="cart.events",
        payload=payload,
        headers={
            "event-id": event_id,
            "event-type": "ItemAdded",
            "aggregate-id": "c-1",
            "aggregate-version": str(version),
        },
    )

    async def settle(*_: object) -> None:
        return None

    return Delivery(message, 1, version, settle, settle)
