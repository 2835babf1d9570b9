"""The optional bearer token and the body size limit, on both services' apps."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from microservice_connector.cart_service.main import build_cart_app
from microservice_connector.settings import Settings

TOKEN = "s3cret-token"
BODY = {"item_id": "a", "quantity": 1}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(data_dir=tmp_path, api_token=SecretStr(TOKEN), max_body_bytes=2048)
    with TestClient(build_cart_app(settings, relay=False)) as client:
        yield client


def test_mutations_need_the_token_reads_do_not(client: TestClient) -> None:
    refused = client.post("/carts/c/items", json=BODY)
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"
    assert "Bearer" in refused.json()["detail"]
    wrong = client.post("/carts/c/items", json=BODY, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    assert client.get("/events").json()["events"] == []  # nothing was written
    ok = client.post("/carts/c/items", json=BODY, headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert client.get("/carts/c").status_code == 200
    assert client.delete("/carts/c/items/a").status_code == 401
    assert TOKEN not in client.get("/metrics").text


def test_large_bodies_are_413_declared_or_streamed(client: TestClient) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    big = b'{"item_id": "a", "quantity": 1, "pad": "' + b"x" * 4096 + b'"}'
    declared = client.post(
        "/carts/c/items", content=big, headers={**auth, "content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert "larger than 2048 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        yield big[:1000]
        yield big[1000:]

    streamed = client.post(
        "/carts/c/items", content=chunks(), headers={**auth, "content-type": "application/json"}
    )
    assert streamed.status_code == 413

    def small() -> Iterator[bytes]:
        yield b'{"item_id": "a",'
        yield b' "quantity": 2}'

    fine = client.post(
        "/carts/c/items", content=small(), headers={**auth, "content-type": "application/json"}
    )
    assert fine.status_code == 200, fine.text
    assert fine.json()["items"] == {"a": 2}
