"""`HEAD` is answered as `GET` without a body (RFC 9110: a server must support both), over a
real uvicorn: what a load balancer's health check or `curl -I` sends."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from microservice_connector.billing_service.main import build_billing_app
from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings
from support.asgi_server import served
from support.nats import NatsServer


@pytest.mark.parametrize("path", ["/carts/c-1", "/carts/c-1/events", "/healthz", "/events"])
def test_head_on_a_cart_read_has_gets_status_and_headers_and_no_body(
    tmp_path: Path, path: str
) -> None:
    app = build_cart_app(Settings(data_dir=tmp_path), relay=False)
    with served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        client.post("/carts/c-1/items", json={"item_id": "i", "quantity": 1}).raise_for_status()
        got = client.get(path)
        head = client.head(path)

    assert got.status_code == 200, got.text
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == str(len(got.content))


def test_head_keeps_gets_errors_and_a_post_only_route_stays_405(tmp_path: Path) -> None:
    app = build_cart_app(Settings(data_dir=tmp_path), relay=False)
    with served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        missing = client.head("/carts/nobody")
        post_only = client.head("/carts/c-1/checkout")

    assert missing.status_code == 404
    assert missing.content == b""
    assert post_only.status_code == 405
    assert "POST" in post_only.headers["allow"]


def test_head_on_the_live_feed_answers_at_once_and_leaves_no_stream_open(tmp_path: Path) -> None:
    app = build_cart_app(Settings(data_dir=tmp_path), relay=False)
    with served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        head = client.head("/events/stream", timeout=5.0)
        deadline = time.monotonic() + 10
        while app.state.live_feed.open_streams:
            assert time.monotonic() < deadline, "the HEAD's stream stayed open"
            time.sleep(0.01)

    assert head.status_code == 200
    assert head.headers["content-type"].startswith("text/event-stream")
    assert head.content == b""


@pytest.mark.nats
def test_head_on_billings_health_and_prices(tmp_path: Path, nats_server: NatsServer) -> None:
    settings = Settings(data_dir=tmp_path, broker="nats", nats_url=nats_server.url)
    app = build_billing_app(settings)
    with served(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        health, prices = client.head("/healthz"), client.head("/prices")

    assert health.status_code == 200
    assert prices.status_code == 200
    assert prices.content == b""
