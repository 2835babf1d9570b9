"""What schemathesis found at the edges of the HTTP layer, kept as plain regression tests:
integral floats are integers, bodies that are not even text are 422, huge positions are 422,
and the OpenAPI document describes the error bodies the services really send."""

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


def test_an_integral_float_is_an_integer_and_other_non_integers_are_refused(
    client: TestClient,
) -> None:
    ok = client.post("/carts/c/items", json={"item_id": "i", "quantity": 3.0})
    assert ok.status_code == 200, ok.text
    assert ok.json()["items"] == {"i": 3}
    for bad in (3.5, "3", True):
        response = client.post("/carts/c/items", json={"item_id": "i", "quantity": bad})
        assert response.status_code == 422, (bad, response.text)


def test_a_body_that_cannot_be_parsed_is_malformed_input(client: TestClient) -> None:
    response = client.post(
        "/carts/c/items", content=b"\xff\xfe", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "body" in response.json()["detail"]


@pytest.mark.parametrize(
    "body", [b"[" * 10_000 + b"]" * 10_000, b'{"a":' * 5_000 + b"1" + b"}" * 5_000]
)
def test_a_body_nested_past_the_parsers_depth_is_malformed_input(
    client: TestClient, body: bytes
) -> None:
    response = client.post(
        "/carts/c/items", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert "body" in response.json()["detail"]


@pytest.mark.parametrize("url", ["/events?after=99999999999999999999", "/carts/c?version=2e20"])
def test_positions_and_versions_past_sql_integers_are_refused(client: TestClient, url: str) -> None:
    assert client.get(url).status_code == 422


def test_openapi_documents_the_error_bodies_sent(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/carts/{cart_id}/items"]["post"][
        "responses"
    ]
    assert {"401", "404", "409", "413", "422", "503"} <= responses.keys()
    schema = responses["422"]["content"]["application/json"]["schema"]["$ref"]
    assert schema.endswith("/InvalidInputBody")
