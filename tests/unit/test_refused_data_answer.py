"""Data the database refused answers 422 with its words, never a 500 (DESIGN §3.4, §4)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from microservice_connector.eventstore.failures import DataRejected
from microservice_connector.web.errors import install_error_handlers


def test_data_the_database_refused_answers_422_saying_what_was_refused() -> None:
    app = FastAPI()
    install_error_handlers(app, {})

    @app.post("/carts/{cart_id}/items")
    async def add() -> None:
        raise DataRejected("database events.db refused the data: value too long for type")

    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/carts/c-1/items")

    assert answer.status_code == 422
    assert answer.json() == {
        "detail": "database events.db refused the data: value too long for type"
    }
