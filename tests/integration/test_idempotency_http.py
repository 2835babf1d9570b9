"""`Idempotency-Key` on the cart API, on SQLite and PostgreSQL: a command is applied at most
once per key, a repeat gets the first answer again (marked as a replay), the same key with
another request answers 422, a malformed key 422, and it all holds across restarts and
across instances sharing one database."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.eventstore.errors import DatabaseUnavailable
from microservice_connector.eventstore.idempotency_keys import SqlIdempotencyKeys
from microservice_connector.settings import Settings
from support.asgi_server import served

POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
ADD = {"item_id": "a", "quantity": 2}


@pytest.fixture(params=["sqlite", POSTGRES])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None
    return Settings(data_dir=tmp_path, database_url=url)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(build_cart_app(settings, relay=False)) as client:
        yield client


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": f'"{value}"'}


def events_of(client: TestClient, cart_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = client.get(f"/carts/{cart_id}/events").json()["events"]
    return events


def test_a_repeated_command_is_applied_once_and_answered_as_the_first_time(
    client: TestClient,
) -> None:
    first = client.post("/carts/c1/items", json=ADD, headers=key("k-add"))
    assert first.status_code == 200
    assert "idempotent-replayed" not in first.headers
    client.post("/carts/c1/items", json={"item_id": "b", "quantity": 1})  # the cart moves on
    for _ in range(2):
        repeat = client.post("/carts/c1/items", json=ADD, headers=key("k-add"))
        assert repeat.status_code == 200
        assert repeat.headers["idempotent-replayed"] == "true"
        assert (
            repeat.json()
            == first.json()
            == {
                "cart_id": "c1",
                "version": 1,
                "status": "open",
                "items": {"a": 2},
            }
        )
    assert [e["version"] for e in events_of(client, "c1")] == [1, 2]
    metrics = client.get("/metrics").text
    assert 'command="add_item",outcome="replayed"' in metrics  # not counted as an error
    assert 'outcome="error"' not in metrics


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("DELETE", "/carts/c1/items/a", {"quantity": 1}),
        ("DELETE", "/carts/c1/items/a", {}),  # all of it: a second run would fail (409)
        ("POST", "/carts/c1/checkout", {}),  # a second checkout would fail (409)
    ],
)
def test_every_command_replays_even_where_running_it_again_would_fail(
    client: TestClient, method: str, path: str, params: dict[str, int]
) -> None:
    client.post("/carts/c1/items", json=ADD)
    first = client.request(method, path, params=params, headers=key("k1"))
    assert first.status_code == 200
    repeat = client.request(method, path, params=params, headers=key("k1"))
    assert repeat.status_code == 200, repeat.text
    assert repeat.headers["idempotent-replayed"] == "true"
    assert repeat.json() == first.json()
    assert len(events_of(client, "c1")) == 2


def test_the_bare_and_the_quoted_key_are_the_same_key(client: TestClient) -> None:
    client.post("/carts/c1/items", json=ADD, headers={"Idempotency-Key": "k1"})
    repeat = client.post("/carts/c1/items", json=ADD, headers={"Idempotency-Key": '"k1"'})
    assert repeat.headers["idempotent-replayed"] == "true"
    assert len(events_of(client, "c1")) == 1


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/carts/c1/items", {"item_id": "a", "quantity": 3}),  # would succeed
        ("POST", "/carts/c2/items", ADD),  # another cart
        ("DELETE", "/carts/c1/items/zzz", None),  # would fail: no such item
    ],
)
def test_the_same_key_with_another_request_answers_422_and_changes_nothing(
    client: TestClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    client.post("/carts/c1/items", json=ADD, headers=key("k1"))
    reused = client.request(method, path, json=body, headers=key("k1"))
    assert reused.status_code == 422
    assert "different request" in reused.json()["detail"]
    assert len(events_of(client, "c1")) == 1
    assert client.get("/carts/c2").status_code == 404


@pytest.mark.parametrize(
    "value", ["", '""', "k" * 256, "two words", '"unterminated', "a\\b", "naïve"]
)
def test_a_malformed_key_answers_422_and_applies_nothing(client: TestClient, value: str) -> None:
    answer = client.post("/carts/c1/items", json=ADD, headers={"Idempotency-Key": value.encode()})
    assert answer.status_code == 422
    assert "Idempotency-Key" in answer.json()["detail"]
    assert client.get("/carts/c1").status_code == 404


def test_two_keys_on_one_request_answer_422(client: TestClient) -> None:
    answer = client.post(
        "/carts/c1/items",
        json=ADD,
        headers=[("Idempotency-Key", "k1"), ("Idempotency-Key", "k2")],  # type: ignore[arg-type]
    )
    assert answer.status_code == 422
    assert client.get("/carts/c1").status_code == 404


def test_a_failed_command_is_not_remembered_its_retry_runs_again(client: TestClient) -> None:
    refused = client.post("/carts/c1/checkout", headers=key("k1"))
    assert refused.status_code == 404  # no cart yet
    client.post("/carts/c1/items", json=ADD)
    retried = client.post("/carts/c1/checkout", headers=key("k1"))
    assert retried.status_code == 200
    assert "idempotent-replayed" not in retried.headers
    assert retried.json()["status"] == "checked_out"


def test_a_repeat_whose_key_cannot_be_looked_up_answers_503_not_its_own_failure(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    client.post("/carts/c1/items", json=ADD)
    assert client.post("/carts/c1/checkout", headers=key("k-out")).status_code == 200

    def unreachable(_keys: SqlIdempotencyKeys, _key: str) -> None:
        raise DatabaseUnavailable("connection reset (simulated)")

    with monkeypatch.context() as patched:
        patched.setattr(SqlIdempotencyKeys, "find", unreachable)
        repeat = client.post("/carts/c1/checkout", headers=key("k-out"))
    # Running it again failed (409: checked out), but it was applied: the client must ask
    # again rather than hear that its checkout was refused.
    assert repeat.status_code == 503
    assert repeat.headers["retry-after"] == "1"
    assert "Idempotency-Key" in repeat.json()["detail"]
    again = client.post("/carts/c1/checkout", headers=key("k-out"))
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"


def test_a_key_outlives_a_restart(settings: Settings) -> None:
    with TestClient(build_cart_app(settings, relay=False)) as before:
        first = before.post("/carts/c1/items", json=ADD, headers=key("k1")).json()
    with TestClient(build_cart_app(settings, relay=False)) as after:
        repeat = after.post("/carts/c1/items", json=ADD, headers=key("k1"))
        assert repeat.headers["idempotent-replayed"] == "true"
        assert repeat.json() == first
        assert len(events_of(after, "c1")) == 1


async def _send_together(ports: list[int], count: int, cart: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as http:
        return await asyncio.gather(
            *(
                http.post(
                    f"http://127.0.0.1:{ports[n % len(ports)]}/carts/{cart}/items",
                    json=ADD,
                    headers=key(f"k-{cart}"),
                )
                for n in range(count)
            )
        )


def _assert_applied_once(answers: list[httpx.Response], port: int, cart: str) -> None:
    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) <= {200, 409}, [a.text for a in answers]
    first = [a for a in answers if a.status_code == 200 and "idempotent-replayed" not in a.headers]
    assert len(first) == 1, statuses
    for answer in answers:
        if answer.status_code == 409:
            assert answer.headers["retry-after"] == "1"
        else:
            assert answer.json() == first[0].json()
    events = httpx.get(f"http://127.0.0.1:{port}/carts/{cart}/events").json()["events"]
    assert len(events) == 1


def test_concurrent_repeats_are_applied_once(settings: Settings) -> None:
    with served(build_cart_app(settings, relay=False)) as port:
        answers = asyncio.run(_send_together([port], 16, "c1"))
        _assert_applied_once(answers, port, "c1")


@pytest.mark.postgres
def test_concurrent_repeats_on_two_instances_are_applied_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """The loser of a race between instances answers as a replay (or 409), never applies."""
    settings = Settings(data_dir=tmp_path, database_url=postgres_url)
    apps = [build_cart_app(settings, relay=False) for _ in range(2)]
    with served(apps[0]) as first, served(apps[1]) as second:
        for round_ in range(5):
            cart = f"c{round_}"
            answers = asyncio.run(_send_together([first, second], 8, cart))
            _assert_applied_once(answers, first, cart)
            # Each instance now knows the key from the store, whoever applied it.
            for port in (first, second):
                repeat = httpx.post(
                    f"http://127.0.0.1:{port}/carts/{cart}/items",
                    json=ADD,
                    headers=key(f"k-{cart}"),
                )
                assert repeat.headers["idempotent-replayed"] == "true"


def test_the_header_is_documented_on_every_command(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    commands = [
        ("post", "/carts/{cart_id}/items"),
        ("delete", "/carts/{cart_id}/items/{item_id}"),
        ("post", "/carts/{cart_id}/checkout"),
    ]
    for method, path in commands:
        operation = paths[path][method]
        assert "Idempotency-Key" in [p["name"] for p in operation["parameters"]]
        assert "Idempotent-Replayed" in operation["responses"]["200"]["headers"]
    reads = [p["name"] for p in paths["/carts/{cart_id}"]["get"].get("parameters", [])]
    assert "Idempotency-Key" not in reads


def test_a_repeat_the_fastapi_route_answers_is_replayed_too(client: TestClient) -> None:
    """A body the fast lane leaves to FastAPI (a charset on its type) takes the other lane."""
    headers = {**key("k1"), "Content-Type": "application/json; charset=utf-8"}
    body = b'{"item_id": "a", "quantity": 2}'
    first = client.post("/carts/c1/items", content=body, headers=headers)
    repeat = client.post("/carts/c1/items", content=body, headers=headers)
    assert first.status_code == repeat.status_code == 200
    assert repeat.headers["idempotent-replayed"] == "true"
    assert repeat.json() == first.json()
    assert len(events_of(client, "c1")) == 1
