"""The command door: plain commands skip the middleware they do not need, and everything
else (a key to replay, a body over the limit, a read, a body the lane cannot read) takes the
app's whole stack; a command refused on the short path is answered and counted as before."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from microservice_connector.cart_service.infrastructure.command_door import CommandDoor
from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings
from microservice_connector.web.guards import Receive, Scope, Send

JSON = {"Content-Type": "application/json"}
ADD = b'{"item_id": "a", "quantity": 1}'


class CountedWholeStack:
    """The door's whole stack, counting the requests that take it."""

    def __init__(self, door: CommandDoor) -> None:
        self.whole = door._whole  # the test watches the door's own choice
        self.taken = 0
        door._whole = self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.taken += 1
        await self.whole(scope, receive, send)


@pytest.fixture
def door_app(tmp_path: Path) -> Iterator[tuple[TestClient, CountedWholeStack]]:
    app = build_cart_app(Settings(data_dir=tmp_path, max_body_bytes=1024), relay=False)
    door = door_of(app)
    assert isinstance(door, CommandDoor)
    whole = CountedWholeStack(door)
    with TestClient(app) as client:
        yield client, whole


def door_of(app: FastAPI) -> Any:
    """What the app's outermost layers (the request count, then `HEAD` as `GET`) hand
    requests to."""
    return app.middleware_stack._app._app  # type: ignore[union-attr]


def taken_by_whole_stack(
    door_app: tuple[TestClient, CountedWholeStack], method: str, path: str, **options: Any
) -> tuple[int, bool]:
    client, whole = door_app
    before = whole.taken
    response = client.request(method, path, **options)
    return response.status_code, whole.taken > before


def test_plain_commands_take_the_short_path(
    door_app: tuple[TestClient, CountedWholeStack],
) -> None:
    assert taken_by_whole_stack(door_app, "POST", "/carts/c/items", content=ADD, headers=JSON) == (
        200,
        False,
    )
    assert taken_by_whole_stack(door_app, "DELETE", "/carts/c/items/a") == (200, False)
    assert taken_by_whole_stack(door_app, "POST", "/carts/c/items", content=ADD, headers=JSON) == (
        200,
        False,
    )
    assert taken_by_whole_stack(door_app, "POST", "/carts/c/checkout") == (200, False)


@pytest.mark.parametrize(
    ("method", "path", "options", "status"),
    [
        (
            "POST",
            "/carts/k/items",
            {"content": ADD, "headers": {**JSON, "Idempotency-Key": "k-1"}},
            200,
        ),
        ("POST", "/carts/big/items", {"content": b" " * 2000 + ADD, "headers": JSON}, 413),
        ("POST", "/carts/bad/items", {"content": b"{not json", "headers": JSON}, 422),
        (
            "POST",
            "/carts/q/items",
            {"content": ADD, "headers": {"Content-Type": "text/plain"}},
            422,
        ),
        ("GET", "/carts/nobody", {}, 404),
    ],
)
def test_what_the_short_path_cannot_answer_takes_the_whole_stack(
    door_app: tuple[TestClient, CountedWholeStack],
    method: str,
    path: str,
    options: dict[str, Any],
    status: int,
) -> None:
    assert taken_by_whole_stack(door_app, method, path, **options) == (status, True)


def test_a_command_refused_on_the_short_path_is_answered_and_counted_with_its_status(
    door_app: tuple[TestClient, CountedWholeStack],
) -> None:
    client, _ = door_app
    assert client.post("/carts/done/items", content=ADD, headers=JSON).status_code == 200
    assert client.post("/carts/done/checkout").status_code == 200
    refused = client.post("/carts/done/checkout")
    assert refused.status_code == 409
    assert "checked out" in refused.json()["detail"]
    missing = client.delete("/carts/nobody/items/a")
    assert missing.status_code == 404
    metrics = client.get("/metrics").text
    assert (
        'msc_http_requests_total{method="POST",route="/carts/{cart_id}/checkout",status="409"} 1.0'
        in metrics
    )
    assert 'route="/carts/{cart_id}/items/{item_id}",status="404"} 1.0' in metrics


def test_with_a_token_set_every_request_takes_the_whole_stack(tmp_path: Path) -> None:
    app: FastAPI = build_cart_app(
        Settings(data_dir=tmp_path, api_token="s3cret-token-of-some-length"), relay=False
    )
    assert not isinstance(door_of(app), CommandDoor)
