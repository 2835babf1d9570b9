"""`MSC_READ_TOKEN` locks every read route of both services, enumerated from the apps
themselves (so a new route cannot be forgotten); the probes and the UI's own files stay open,
and `/metrics` answers to `MSC_METRICS_TOKEN` alone."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from microservice_connector.billing_service.application import BillingLedger, CartEventIn
from microservice_connector.billing_service.main import build_billing_app, open_billing_repository
from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.events.cart import CartCheckedOut, ItemAdded
from microservice_connector.settings import Settings
from microservice_connector.web.access import read_headers
from support.nats import NatsServer

READ, WRITE, METRICS = "read-s3cret", "write-s3cret", "metrics-s3cret"
OPEN = {"/healthz", "/readyz", "/", "/ui", "/ui/config.json"}  # a new open route fails
NOW = datetime(2026, 11, 25, tzinfo=UTC)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def locked(tmp_path: Path, **more: Any) -> Settings:
    return Settings(data_dir=tmp_path, read_token=READ, api_token=WRITE, **more)


def read_routes(app: FastAPI) -> list[str]:
    """Every GET path template the app routes (included routers too), except the open ones."""
    paths = [
        context.path
        for context in iter_route_contexts(app.routes)
        if context.path and "GET" in (getattr(context, "methods", None) or set())
    ]
    return sorted(p for p in paths if p not in OPEN and p != "/metrics")


def filled(template: str, values: dict[str, str]) -> str:
    return re.sub(r"{(\w+)}", lambda m: values[m.group(1)], template)


@pytest.fixture
def cart(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The cart app with a read and a write token, holding one checked-out cart."""
    app = build_cart_app(locked(tmp_path), relay=False)
    with TestClient(app) as client:
        added = client.post(
            "/carts/c-1/items", json={"item_id": "item-001", "quantity": 1}, headers=bearer(WRITE)
        )
        assert added.status_code == 200, added.text
        events = client.get("/carts/c-1/events", headers=bearer(READ)).json()["events"]
        app.state.live_feed.close()  # so /events/stream ends after its first frame
        yield client, {"cart_id": "c-1", "event_id": events[0]["event_id"]}


@pytest.fixture
def billing(tmp_path: Path, nats_server: NatsServer) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """The billing app with a read and a write token, holding one invoiced cart."""
    settings = locked(tmp_path, broker="nats", nats_url=nats_server.url)
    repository = open_billing_repository(settings)
    try:
        BillingLedger(repository).apply_batch(
            [
                CartEventIn("ev-1", "c-1", 1, ItemAdded("c-1", "item-001", 1, NOW)),
                CartEventIn("ev-2", "c-1", 2, CartCheckedOut("c-1", NOW)),
            ]
        )
    finally:
        repository.close()
    with TestClient(build_billing_app(settings)) as client:
        yield client, {"cart_id": "c-1", "event_id": "ev-1"}


HINTS = {"/billing/events/{event_id}": {"cart_id": "c-1", "version": "1"}}


@pytest.mark.nats
@pytest.mark.parametrize("service", ["cart", "billing"])
def test_every_read_route_is_401_without_a_token_and_200_with_either(
    service: str, request: pytest.FixtureRequest
) -> None:
    client, values = request.getfixturevalue(service)
    routes = read_routes(client.app)
    assert {"/openapi.json", "/carts/{cart_id}" if service == "cart" else "/prices"} <= set(routes)
    assert len(routes) >= 9, routes  # the enumeration reached the included routers too
    for template in routes:
        path, params = filled(template, values), HINTS.get(template, {})
        refused = client.get(path, params=params)
        assert refused.status_code == 401, path
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "MSC_READ_TOKEN" in refused.json()["detail"], path
        assert READ not in refused.text
        assert WRITE not in refused.text
        wrong = client.get(path, params=params, headers=bearer("nope"))
        assert wrong.status_code == 401, path
        for token in (READ, WRITE):
            answered = client.get(path, params=params, headers=bearer(token))
            assert answered.status_code == 200, (path, answered.text)


@pytest.mark.nats
@pytest.mark.parametrize("service", ["cart", "billing"])
def test_probes_and_metrics_stay_open_and_the_read_token_does_not_write(
    service: str, request: pytest.FixtureRequest
) -> None:
    client, _ = request.getfixturevalue(service)
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)  # answers, whatever it finds
    assert client.get("/readyz").status_code != 401
    assert client.get("/metrics").status_code == 200
    command = (
        ("POST", "/carts/c-2/items", {"item_id": "a", "quantity": 1})
        if service == "cart"
        else ("PUT", "/prices/a", {"unit_price_cents": 5})
    )
    method, path, body = command
    assert client.request(method, path, json=body, headers=bearer(READ)).status_code == 401
    assert client.request(method, path, json=body, headers=bearer(WRITE)).status_code == 200


def test_the_event_browser_files_stay_open(cart: tuple[TestClient, dict[str, str]]) -> None:
    client, _ = cart
    page = client.get("/ui/")
    assert page.status_code == 200
    assert "Event browser" in page.text
    for asset in ("/ui/app.js", "/ui/style.css", "/ui/config.json"):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/", follow_redirects=False).status_code == 307


def test_the_metrics_token_locks_metrics_alone(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, metrics_token=METRICS, api_token=WRITE)
    with TestClient(build_cart_app(settings, relay=False)) as client:
        refused = client.get("/metrics", headers=bearer(READ))
        assert refused.status_code == 401
        assert "MSC_METRICS_TOKEN" in refused.json()["detail"]
        assert client.get("/metrics", headers=bearer(METRICS)).text.startswith("# HELP")
        assert client.get("/metrics", headers=bearer(WRITE)).status_code == 200
        assert client.get("/events").status_code == 200  # no read token: reads stay open
        assert client.get("/events", headers=bearer(METRICS)).status_code == 200


@pytest.mark.parametrize(
    ("tokens", "sent"),
    [
        ({"read_token": READ, "api_token": WRITE}, bearer(READ)),
        ({"api_token": WRITE}, bearer(WRITE)),
        ({"metrics_token": METRICS}, {}),
        ({}, {}),
    ],
)
def test_a_client_sends_the_read_token_else_the_write_token(
    tokens: dict[str, str], sent: dict[str, str]
) -> None:
    assert read_headers(Settings(**tokens)) == sent
