"""The fast lane for cart commands answers exactly as the FastAPI routes do: every request
below gets the same status and body from the app with it and from the app without it (each
command route answering through FastAPI's own handler only), and the plainly valid ones are
answered by the lane itself."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from microservice_connector.cart_service.infrastructure.fast_commands import CommandRoute
from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings
from microservice_connector.web.guards import Message

JSON = {"Content-Type": "application/json"}
# (method, path, body bytes or None, headers, answered by the fast lane)
REQUESTS: list[tuple[str, str, bytes | None, dict[str, str], bool]] = [
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": 3}', JSON, True),
    ("POST", "/carts/new-1/items", b'{"quantity": 1, "item_id": "x.y:z_1-2"}', JSON, True),
    # 3.0 is the integer 3 to the route's own field (JSON Schema's view), so the lane takes it.
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": 3.0}', JSON, True),
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": true}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": "3"}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": 0}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": 10001}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": 10000}', JSON, True),
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": 1, "x": 1}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "b"}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "a b", "quantity": 1}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "a\\n", "quantity": 1}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "' + b"i" * 65 + b'", "quantity": 1}', JSON, False),
    ("POST", "/carts/c1/items", b"[1, 2]", JSON, False),
    ("POST", "/carts/c1/items", b"{not json", JSON, False),
    # Encodings json.loads detects in bytes: FastAPI reads them; the lane leaves them to it.
    ("POST", "/carts/c1/items", '{"item_id": "b", "quantity": 1}'.encode("utf-16"), JSON, False),
    ("POST", "/carts/c1/items", b'\xef\xbb\xbf{"item_id": "b", "quantity": 1}', JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "b\xff", "quantity": 1}', JSON, False),
    ("POST", "/carts/c1/items", b"", JSON, False),
    ("POST", "/carts/c1/items", b'{"item_id": "b", "quantity": 1}', {}, False),
    (
        "POST",
        "/carts/c1/items",
        b'{"item_id": "b", "quantity": 1}',
        {"Content-Type": "text/plain"},
        False,
    ),
    (
        "POST",
        "/carts/c1/items",
        b'{"item_id": "b", "quantity": 1}',
        {"Content-Type": "application/json; charset=utf-8"},
        False,
    ),
    (
        "POST",
        "/carts/c1/items",
        b'{"item_id": "b", "quantity": 1}',
        {**JSON, "X-Correlation-ID": "req-9"},
        True,
    ),
    (
        "POST",
        "/carts/c1/items",
        b'{"item_id": "b", "quantity": 1}',
        {**JSON, "X-Correlation-ID": "not ok"},
        False,
    ),
    ("POST", "/carts/a%20b/items", b'{"item_id": "b", "quantity": 1}', JSON, False),
    # FastAPI redirects this to /carts/c1/items; the lane answers the request that follows.
    ("POST", "/carts/c1/items/", b'{"item_id": "b", "quantity": 1}', JSON, True),
    ("POST", "/carts/done/items", b'{"item_id": "b", "quantity": 1}', JSON, True),
    ("DELETE", "/carts/c1/items/a?quantity=1", None, {}, True),
    ("DELETE", "/carts/c1/items/a?quantity=50", None, {}, True),
    ("DELETE", "/carts/c1/items/a?quantity=0", None, {}, False),
    ("DELETE", "/carts/c1/items/a?quantity=01", None, {}, True),  # the field reads 1
    ("DELETE", "/carts/c1/items/a?quantity=abc", None, {}, False),
    ("DELETE", "/carts/c1/items/a?quantity=10001", None, {}, False),
    ("DELETE", "/carts/c1/items/a?quantity=", None, {}, False),
    ("DELETE", "/carts/c1/items/a?Quantity=1", None, {}, False),  # not the parameter: 422
    ("DELETE", "/carts/c1/items/a?quantity=1&quantity=1", None, {}, False),
    ("DELETE", "/carts/c1/items/nothing", None, {}, True),
    ("DELETE", "/carts/nobody/items/a", None, {}, True),
    ("DELETE", "/carts/c1/items/a", None, {}, True),
    ("POST", "/carts/emptied/checkout", None, {}, True),
    ("POST", "/carts/nobody/checkout", None, {}, True),
    ("POST", "/carts/done/checkout", None, {}, True),
    ("POST", "/carts/c1/checkout", None, {"X-Correlation-ID": "req-10"}, True),
    ("POST", "/carts/c1/checkout", None, {"X-Correlation-ID": "a b"}, False),
    ("GET", "/carts/c1", None, {}, False),
]


def seeded(app: FastAPI) -> TestClient:
    """A client on `app`, whose store holds carts c1 (2 of a), emptied, and done."""
    client = TestClient(app)
    client.__enter__()
    for cart, item in (("c1", "a"), ("c1", "a"), ("emptied", "a"), ("done", "a")):
        assert client.post(f"/carts/{cart}/items", json={"item_id": item, "quantity": 1}).is_success
    assert client.delete("/carts/emptied/items/a").is_success
    assert client.post("/carts/done/checkout").is_success
    return client


def answered(app: FastAPI) -> int:
    """How many requests the command routes' lanes answered so far."""
    return sum(route.answered for route in app.routes if isinstance(route, CommandRoute))


def without_lanes(app: FastAPI) -> FastAPI:
    """`app` with each command answered through FastAPI's own handler only: no lanes in
    front of the router, and no command door in front of the middleware (FastAPI builds
    its whole stack again on the first request)."""
    app.router.middleware_stack = app.router.app
    app.middleware_stack = None
    return app


@pytest.fixture(scope="module")
def clients(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, TestClient]]:
    """Both apps see the same requests in the same order, so their states stay alike."""
    folder = tmp_path_factory.mktemp("fast-lane")
    fast = build_cart_app(Settings(data_dir=folder / "fast"), relay=False)
    plain = without_lanes(build_cart_app(Settings(data_dir=folder / "plain"), relay=False))
    with seeded(fast) as fast_client, seeded(plain) as plain_client:
        yield fast_client, plain_client


def send(
    client: TestClient, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, Any]:
    response = client.request(method, path, content=body, headers=headers)
    return response.status_code, response.json()


@pytest.mark.parametrize(("method", "path", "body", "headers", "fast"), REQUESTS)
def test_the_lane_answers_as_the_route_does(
    clients: tuple[TestClient, TestClient],
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    fast: bool,
) -> None:
    with_lane, without = clients
    before = answered(with_lane.app)  # type: ignore[arg-type]
    assert send(with_lane, method, path, body, headers) == send(
        without, method, path, body, headers
    )
    assert answered(with_lane.app) - before == (1 if fast else 0)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("quantiy=1", "quantiy: not a query parameter of this command (it takes: quantity)"),
        ("quantity=1&quantity=2", "quantity: given more than once"),
        ("quantity=1&x=", "x: not a query parameter"),
    ],
)
def test_a_removal_with_an_odd_query_is_refused_and_removes_nothing(
    clients: tuple[TestClient, TestClient], query: str, says: str
) -> None:
    # FastAPI ignored the typo, and the removal took everything ("all when omitted").
    for client in clients:
        client.post("/carts/odd-query/items", json={"item_id": "a", "quantity": 3})
        refused = client.delete(f"/carts/odd-query/items/a?{query}")
        assert refused.status_code == 422
        assert says in refused.json()["detail"]
        assert client.get("/carts/odd-query").json()["items"]["a"] >= 3


def test_a_correlation_id_reaches_the_event_and_metrics_name_the_route(
    clients: tuple[TestClient, TestClient],
) -> None:
    with_lane, without = clients
    for client in clients:
        added = client.post(
            "/carts/traced/items",
            content=b'{"item_id": "b", "quantity": 1}',
            headers={**JSON, "X-Correlation-ID": "req-42"},
        )
        assert added.status_code == 200
        assert client.get("/carts/traced/events").json()["events"][-1]["correlation_id"] == "req-42"

    def counted(client: TestClient) -> list[str]:
        return [
            line
            for line in client.get("/metrics").text.splitlines()
            if line.startswith("msc_http_requests_total{") and "/carts/" in line
        ]

    assert counted(with_lane) == counted(without)
    assert any('route="/carts/{cart_id}/items"' in line for line in counted(with_lane))


def test_a_command_route_refuses_parameters_its_lane_could_not_read_as_fastapi_does() -> None:
    async def endpoint(cart_id: str, user: Annotated[str, Depends(lambda: "someone")]) -> None:
        """A dependency: the lane would have to run it as FastAPI does."""

    with pytest.raises(TypeError, match="a command route takes path, query, header and one body"):
        CommandRoute("/carts/{cart_id}/odd", endpoint, methods=["POST"])


def post_in_chunks(
    client: TestClient, path: str, chunks: list[bytes], headers: dict[str, str]
) -> tuple[int, Any]:
    """POST `chunks` as separate ASGI messages (the test client would join them), on the
    client's own event loop; the status and JSON body of the answer."""
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks[:-1]
    ]
    messages.append({"type": "http.request", "body": chunks[-1], "more_body": False})
    sent: list[Message] = []

    async def receive() -> Message:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("testclient", 50000),
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "state": {},
    }
    client.portal.call(client.app, scope, receive, send)  # type: ignore[union-attr, arg-type]
    assert not messages, "the app did not read the whole body"
    [start] = [m for m in sent if m["type"] == "http.response.start"]
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], json.loads(body)


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency-key"])
def test_a_body_sent_in_chunks_is_read_whole_by_the_lane(
    clients: tuple[TestClient, TestClient], keyed: bool
) -> None:
    with_lane, _ = clients
    cart = f"chunked-{keyed}"
    body = b'{"item_id": "b", "quantity": 4}'
    # A declared length: the body-size guard hands the chunks on as they come.
    headers = {**JSON, "Content-Length": str(len(body))}
    if keyed:
        headers["Idempotency-Key"] = "chunked-1"
    before = answered(with_lane.app)  # type: ignore[arg-type]
    for n in (1, 2):  # with a key, the store refuses the second: the first answer again
        status, cart_json = post_in_chunks(
            with_lane, f"/carts/{cart}/items", [body[:7], body[7:20], body[20:]], headers
        )
        assert status == 200
        assert cart_json["items"] == {"b": 4 if keyed else 4 * n}
    assert answered(with_lane.app) - before == 2  # type: ignore[arg-type]
